using System.Diagnostics;
using MetaStone.Contracts;
using MetaStone.Grains.Jobs;
using MetaStone.Model;
using MetaStone.Model.Generation;

namespace MetaStone.Grains.Engines;

/// <summary>The real engine: a loaded <see cref="ReflectiveModel"/> whose continuous-batching engine runs on its own thread.</summary>
public sealed class ReflectiveModelEngine(ReflectiveModel model, string device) : ICandidateEngine
{
    public ReflectiveModel ReflectiveModel => model;
    public string Device => device;
    // Tied embeddings are one parameter tensor, counted once: the LM head's matmul still costs 2·V·c per token.
    public ModelInfo Model { get; } = new(Path.GetFileName(Path.TrimEndingDirectorySeparator(model.Directory)),
        model.Model.parameters().Sum(p => p.numel()), model.Model.Config.HiddenSize, model.Head?.ParameterCount ?? 0);
    public int ContextLength => model.Engine.Options.MaxSequenceLength;

    public EngineLoad Load
    {
        get
        {
            var stats = model.Engine.Stats;
            return new EngineLoad(stats.ActiveSequences, stats.QueuedSequences, stats.Slots, stats.TokensPerSecond, stats.GeneratedTokens);
        }
    }

    public static ReflectiveModelEngine LoadFrom(string directory, ModelLoadOptions options) =>
        new(ReflectiveModel.Load(directory, options), options.Device);

    public PromptCheck CheckPrompt(JobRequest request)
    {
        int[] ids = Encode(request.Prompt);
        return new PromptCheck(ids.Length, ContextLength);
    }

    public async Task<CandidateResult> GenerateAsync(CandidateWork work, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var request = new GenerationRequest
        {
            PromptIds = Encode(work.Request.Prompt),
            Seeds = [work.Seed],
            FirstCandidateIndex = work.Index,
            Sampling = ModelMapping.ToSamplingOptions(work.Request.Sampling),
        };
        var trajectories = await model.Engine.GenerateAsync(request, cancellationToken);
        var trajectory = trajectories.Single();
        var described = model.Describe(trajectory);
        return new CandidateResult
        {
            Index = work.Index,
            Seed = work.Seed,
            Text = described.Text,
            Answer = described.Answer,
            PromptTokens = trajectory.PromptTokens,
            ResponseTokens = trajectory.ResponseIds.Length,
            ThinkingTokens = trajectory.ThinkingTokens,
            AnswerTokens = trajectory.AnswerTokens,
            StepScores = trajectory.Steps.Select(s => s.Score).ToArray(),
            Score = described.Score,
            FinishReason = ModelMapping.ToFinishReason(trajectory.FinishReason),
            Replica = "",
            GenerationSeconds = clock.Elapsed.TotalSeconds,
        };
    }

    // The k candidates of a job reach a replica within milliseconds with the same prompt (plus the coordinator's prompt
    // check): the ids of the last few prompts are kept, so a job's prompt is tokenized once per replica, not k + 1 times.
    private const int PromptCacheSize = 64;
    private readonly Dictionary<string, LinkedListNode<(string Prompt, int[] Ids)>> _promptIndex = new(StringComparer.Ordinal);
    private readonly LinkedList<(string Prompt, int[] Ids)> _promptOrder = new();
    private long _tokenizations;

    /// <summary>Prompts actually tokenized (cache misses) since the engine was loaded.</summary>
    public long PromptTokenizations => Interlocked.Read(ref _tokenizations);

    private int[] Encode(string prompt)
    {
        if (string.IsNullOrWhiteSpace(prompt)) throw new ArgumentException("the prompt is empty");
        int[] ids;
        lock (_promptOrder)
        {
            if (_promptIndex.TryGetValue(prompt, out var node))
            {
                _promptOrder.Remove(node);
                _promptOrder.AddFirst(node);
                ids = node.Value.Ids;
            }
            else ids = [];
        }
        if (ids.Length == 0)
        {
            ids = model.EncodePrompt(prompt);
            Interlocked.Increment(ref _tokenizations);
            lock (_promptOrder)
            {
                if (!_promptIndex.ContainsKey(prompt))
                {
                    _promptIndex[prompt] = _promptOrder.AddFirst((prompt, ids));
                    if (_promptOrder.Count > PromptCacheSize)
                    {
                        _promptIndex.Remove(_promptOrder.Last!.Value.Prompt);
                        _promptOrder.RemoveLast();
                    }
                }
            }
        }
        if (ids.Length >= ContextLength)
            throw new ArgumentException($"the prompt is {ids.Length} tokens long, longer than the model's context of {ContextLength} tokens (it must leave room for at least one generated token)");
        return ids;
    }

    public void Dispose() => model.Dispose();
}
