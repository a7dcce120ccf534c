using System.Diagnostics;
using MetaStone.Contracts;
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
            Sampling = new SamplingOptions
            {
                Temperature = work.Request.Temperature,
                TopP = work.Request.TopP,
                RepetitionPenalty = work.Request.RepetitionPenalty,
                MaxNewTokens = work.Request.MaxNewTokens,
                ThinkingBudget = work.Request.ThinkingBudget,
            },
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
            FinishReason = trajectory.FinishReason.ToString().ToLowerInvariant(),
            Replica = "",
            GenerationSeconds = clock.Elapsed.TotalSeconds,
        };
    }

    private int[] Encode(string prompt)
    {
        if (string.IsNullOrWhiteSpace(prompt)) throw new ArgumentException("the prompt is empty");
        int[] ids = model.EncodePrompt(prompt);
        if (ids.Length >= ContextLength)
            throw new ArgumentException($"the prompt is {ids.Length} tokens long, longer than the model's context of {ContextLength} tokens (it must leave room for at least one generated token)");
        return ids;
    }

    public void Dispose() => model.Dispose();
}
