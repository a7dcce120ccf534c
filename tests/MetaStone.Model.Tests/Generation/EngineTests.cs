using MetaStone.Model.Generation;
using MetaStone.Model.Tests.Qwen2;
using MetaStone.Reasoning;
using static TorchSharp.torch;

namespace MetaStone.Model.Tests.Generation;

/// <summary>The batching engine on the fixture Qwen2 (random weights) with a random SPRM head.</summary>
public sealed class EngineTests : IDisposable
{
    // The random fixture model emits near-uniform tokens over 512 ids; make a fifth of the vocabulary
    // "step tokens" so trajectories contain many steps, runs of steps, and steps right after <think>.
    private const int ThinkStart = 500, ThinkEnd = 501, Eos = 1;
    private static readonly StepTokenSet Rules = new(Enumerable.Range(2, 100).ToHashSet(), ThinkStart, ThinkEnd);
    private static readonly int[] Prompt = [270, 253, 250, 502, 159, 413, 256, 120, ThinkStart, 86];

    private readonly Qwen2ForCausalLM _model = ReferenceForwardTests.LoadFixtureModel("qwen2-tiny-random");
    private readonly SprmHead _head;

    public EngineTests()
    {
        manual_seed(11);
        _head = new SprmHead(_model.Config.HiddenSize, CPU);
    }

    public void Dispose()
    {
        _head.Dispose();
        _model.Dispose();
    }

    private GenerationEngine Engine(int maxBatch = 8, bool sharePrefix = true, int maxLength = 128) =>
        new(_model, _head, new EngineOptions { MaxBatch = maxBatch, MaxSequenceLength = maxLength, StepRules = Rules, EosTokenIds = [Eos], SharePrefix = sharePrefix });

    private static GenerationRequest Request(int n, int maxNew = 40, long seedBase = 100, SamplingOptions? sampling = null) => new()
    {
        PromptIds = Prompt,
        Seeds = Enumerable.Range(0, n).Select(i => seedBase + i).ToArray(),
        Sampling = (sampling ?? new SamplingOptions()) with { MaxNewTokens = maxNew },
    };

    [Fact]
    public async Task GreedyGenerationMatchesReferenceContinuation()
    {
        var (ids, _, _, greedy) = ReferenceForwardTests.LoadReference("qwen2-tiny-random");
        using var engine = new GenerationEngine(_model, null, new EngineOptions { MaxBatch = 4, MaxSequenceLength = 64 });
        var result = await engine.GenerateAsync(new GenerationRequest
        {
            PromptIds = ids.Select(i => (int)i).ToArray(),
            Seeds = [1, 2, 3],
            Sampling = SamplingOptions.Greedy with { MaxNewTokens = 8 },
        });
        Assert.All(result, t => Assert.Equal(greedy.Select(i => (int)i), t.ResponseIds));
    }

    [Fact]
    public async Task InFlightStepScoresEqualReencodedScores()
    {
        using var engine = Engine();
        var trajectories = await engine.GenerateAsync(Request(6, maxNew: 60));
        int totalSteps = 0;
        foreach (var t in trajectories)
        {
            var reference = ReencodeScorer.Score(_model, _head, Rules, Prompt, t.ResponseIds);
            Assert.Equal(reference.Select(s => s.StepTokenPosition), t.Steps.Select(s => s.StepTokenPosition));
            for (int i = 0; i < reference.Count; i++)
                Assert.True(Math.Abs(reference[i].Logit - t.Steps[i].Logit) < 1e-4, $"candidate {t.CandidateIndex} step {i}: {t.Steps[i].Logit} vs re-encoded {reference[i].Logit}");
            Assert.Equal(TrajectoryScore.Aggregate(reference.Select(s => s.Score).ToList()), t.Score(), 6);
            totalSteps += reference.Count;
        }
        Assert.True(totalSteps >= 20, $"test needs real steps, got {totalSteps}");
    }

    [Fact]
    public async Task SharedPrefixPrefillsThePromptOnce()
    {
        using var shared = Engine(sharePrefix: true);
        await shared.GenerateAsync(Request(8, maxNew: 4));
        Assert.Equal(Prompt.Length, shared.Stats.PrefillTokensComputed);
        Assert.Equal(7 * Prompt.Length, shared.Stats.PrefillTokensReused);

        using var separate = Engine(sharePrefix: false);
        await separate.GenerateAsync(Request(8, maxNew: 4));
        Assert.Equal(8 * Prompt.Length, separate.Stats.PrefillTokensComputed);
    }

    [Fact]
    public async Task SharedAndSeparatePrefillGiveTheSameTrajectories()
    {
        using var shared = Engine(sharePrefix: true);
        using var separate = Engine(sharePrefix: false);
        var a = await shared.GenerateAsync(Request(4, maxNew: 30));
        var b = await separate.GenerateAsync(Request(4, maxNew: 30));
        for (int i = 0; i < 4; i++) Assert.Equal(a[i].ResponseIds, b[i].ResponseIds);
    }

    [Fact]
    public async Task ACandidateDependsOnlyOnItsSeedNotOnItsBatchmates()
    {
        using var engine = Engine(maxBatch: 8);
        var alone = await engine.GenerateAsync(Request(1, maxNew: 30, seedBase: 777));
        // Same seed joins a busy batch mid-flight, next to other requests and prompts.
        var busy = engine.GenerateAsync(Request(5, maxNew: 50, seedBase: 1));
        var other = engine.GenerateAsync(new GenerationRequest { PromptIds = [5, 6, 7, ThinkStart], Seeds = [9], Sampling = new SamplingOptions { MaxNewTokens = 50 } });
        await Task.Delay(20);
        var joined = await engine.GenerateAsync(Request(1, maxNew: 30, seedBase: 777));
        await Task.WhenAll(busy, other);
        Assert.Equal(alone[0].ResponseIds, joined[0].ResponseIds);
    }

    [Fact]
    public async Task MoreCandidatesThanSlotsQueueAndAllFinish()
    {
        using var engine = Engine(maxBatch: 3);
        var results = await engine.GenerateAsync(Request(10, maxNew: 12) with { FirstCandidateIndex = 20 });
        Assert.Equal(Enumerable.Range(20, 10), results.Select(r => r.CandidateIndex));
        Assert.All(results, r => Assert.True(r.ResponseIds.Length is > 0 and <= 12));
        Assert.Equal(0, engine.Stats.ActiveSequences);
    }

    [Fact]
    public async Task CancelledRequestLeavesTheBatchAndFreesItsSlots()
    {
        // The engine's per-step hook holds its thread at the first decode step until the test has cancelled: polling for
        // an active request raced a 240-token run of the tiny model that can finish between two polls.
        using var decoding = new ManualResetEventSlim();
        using var cancelled = new ManualResetEventSlim();
        using var engine = new GenerationEngine(_model, _head, new EngineOptions
        {
            MaxBatch = 4, MaxSequenceLength = 256, StepRules = Rules, EosTokenIds = [Eos],
            FaultInjection = _ => { decoding.Set(); cancelled.Wait(TimeSpan.FromSeconds(30)); },
        });
        using var cts = new CancellationTokenSource();
        var long_ = engine.GenerateAsync(Request(4, maxNew: 240, sampling: new SamplingOptions { RepetitionPenalty = 1 }) with { StopTokenIds = [] }, cts.Token);
        Assert.True(decoding.Wait(TimeSpan.FromSeconds(30)), "the request never reached a decode step within 30 s");
        Assert.True(engine.Stats.ActiveSequences > 0, "no active sequence at the first decode step");
        cts.Cancel();
        cancelled.Set();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => long_);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (engine.Stats.ActiveSequences > 0 && sw.ElapsedMilliseconds < 1000) await Task.Delay(5);
        Assert.Equal(0, engine.Stats.ActiveSequences);
        // The freed slots take new work.
        var next = await engine.GenerateAsync(Request(4, maxNew: 3));
        Assert.Equal(4, next.Count);
    }

    [Fact]
    public async Task ThinkingBudgetForcesEndOfThinkingThenAnswerBudgetApplies()
    {
        using var engine = Engine();
        var sampling = new SamplingOptions { ThinkingBudget = 7, AnswerBudget = 5, MaxNewTokens = 100 };
        var results = await engine.GenerateAsync(Request(4, maxNew: 100, sampling: sampling));
        foreach (var t in results)
        {
            int end = Array.IndexOf(t.ResponseIds, ThinkEnd);
            Assert.True(end >= 0 && end <= 7, $"</think> at {end}");
            Assert.True(t.ThinkingTokens <= 7);
            Assert.True(t.AnswerTokens <= 5);
            if (t.FinishReason == FinishReason.Length) Assert.Equal(5, t.AnswerTokens);
        }
        Assert.Contains(results, t => t.ThinkingForcedClosed);
    }

    [Fact]
    public async Task StreamingReportsStartStepsAndFinish()
    {
        using var engine = Engine();
        var updates = new List<CandidateUpdate>();
        await foreach (var u in engine.StreamAsync(Request(3, maxNew: 30) with { StreamTokens = true })) updates.Add(u);
        Assert.Equal(3, updates.Count(u => u.Kind == CandidateUpdateKind.Started));
        var finished = updates.Where(u => u.Kind == CandidateUpdateKind.Finished).ToList();
        Assert.Equal(3, finished.Count);
        foreach (var f in finished)
        {
            Assert.Equal(f.Result!.ResponseIds, updates.Where(u => u.Kind == CandidateUpdateKind.Token && u.CandidateIndex == f.CandidateIndex).Select(u => u.TokenId!.Value));
            Assert.Equal(f.Result.Steps.Count, updates.Count(u => u.Kind == CandidateUpdateKind.Step && u.CandidateIndex == f.CandidateIndex));
        }
    }

    [Fact]
    public void BadRequestsAreClearErrors()
    {
        using var engine = Engine(maxLength: 32);
        Assert.Contains("prompt is empty", Assert.Throws<ArgumentException>(() => { _ = engine.GenerateAsync(Request(1) with { PromptIds = [] }); }).Message);
        Assert.Contains("longer than the context window", Assert.Throws<ArgumentException>(() => { _ = engine.GenerateAsync(Request(1) with { PromptIds = Enumerable.Repeat(3, 40).ToArray() }); }).Message);
        Assert.Contains("outside the vocabulary", Assert.Throws<ArgumentException>(() => { _ = engine.GenerateAsync(Request(1) with { PromptIds = [3, 9999] }); }).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => { _ = engine.GenerateAsync(Request(1, sampling: new SamplingOptions { TopP = 0 })); });
    }
}
