using MetaStone.Contracts;

namespace MetaStone.Grains.Engines;

/// <summary>
/// A stand-in for a GPU engine that burns no CPU: every decode step of the running batch takes
/// <see cref="StepLatency"/> plus <see cref="PerSequenceCost"/> per sequence in it, spent in timers. With a zero
/// cost it returns at once, which isolates the orchestration overhead of the cluster (coordinator, candidate and
/// replica round trips). Used by <c>metastone bench cluster</c>, never for real answers.
/// </summary>
public sealed class SimulatedEngine(string device, TimeSpan stepLatency, TimeSpan perSequenceCost, int tokensPerCandidate, int slots = 64) : ICandidateEngine
{
    private int _active, _queued;
    private long _generated;
    private readonly SemaphoreSlim _slots = new(slots, slots);

    public string Device => device;
    public int ContextLength => 4096;
    /// <summary>A made-up model size so sweeps over simulated engines still have a compute axis.</summary>
    public ModelInfo Model { get; } = new("simulated", 1_000_000, 64, 2L * 64 * 64 * 2 + 4 * 64 + 1);
    public TimeSpan StepLatency => stepLatency;
    public TimeSpan PerSequenceCost => perSequenceCost;
    public EngineLoad Load => new(Volatile.Read(ref _active), Volatile.Read(ref _queued), slots, 0, Interlocked.Read(ref _generated));

    public PromptCheck CheckPrompt(JobRequest request)
    {
        if (string.IsNullOrWhiteSpace(request.Prompt)) throw new ArgumentException("the prompt is empty");
        int tokens = request.Prompt.Length / 4 + 1;
        if (tokens >= ContextLength) throw new ArgumentException($"the prompt is {tokens} tokens long, longer than the context of {ContextLength} tokens");
        return new PromptCheck(tokens, ContextLength);
    }

    public async Task<CandidateResult> GenerateAsync(CandidateWork work, CancellationToken cancellationToken)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Interlocked.Increment(ref _queued);
        await _slots.WaitAsync(cancellationToken);
        Interlocked.Decrement(ref _queued);
        Interlocked.Increment(ref _active);
        try
        {
            int tokens = Math.Min(tokensPerCandidate, work.Request.Sampling.MaxNewTokens);
            if (stepLatency > TimeSpan.Zero || perSequenceCost > TimeSpan.Zero)
            {
                // A batched decode step costs the fixed latency plus a share per live sequence; every sequence of the
                // batch advances one token per step, so one candidate waits tokens × step time.
                var step = stepLatency + perSequenceCost * Volatile.Read(ref _active);
                await Task.Delay(step * tokens, cancellationToken);
            }
            Interlocked.Add(ref _generated, tokens);
            // A deterministic pseudo score from the seed, so selection has something to choose from.
            double score = new Random(unchecked((int)(work.Seed * 2654435761L))).NextDouble();
            return new CandidateResult
            {
                Index = work.Index,
                Seed = work.Seed,
                Text = $"simulated candidate {work.Index}",
                Answer = null,
                PromptTokens = work.Request.Prompt.Length / 4 + 1,
                ResponseTokens = tokens,
                ThinkingTokens = tokens,
                AnswerTokens = 0,
                StepScores = [score],
                Score = score,
                FinishReason = CandidateFinishReason.Length,
                Replica = "",
                GenerationSeconds = clock.Elapsed.TotalSeconds,
            };
        }
        finally
        {
            Interlocked.Decrement(ref _active);
            _slots.Release();
        }
    }

    public void Dispose() => _slots.Dispose();
}
