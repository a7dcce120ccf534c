using MetaStone.Contracts;

namespace MetaStone.Grains.Engines;

/// <summary>
/// What a replica grain forwards to: one device's generation engine on this silo. The real implementation wraps a
/// <see cref="MetaStone.Model.ReflectiveModel"/>; the benchmark uses simulated engines with the same contract, so
/// the grains never know which one they talk to.
/// </summary>
public interface ICandidateEngine : IDisposable
{
    /// <summary>cpu, cuda:N, or a simulated device name.</summary>
    string Device { get; }
    /// <summary>Prompt + response limit of one sequence, in tokens.</summary>
    int ContextLength { get; }
    EngineLoad Load { get; }
    /// <summary>The model this engine serves.</summary>
    ModelInfo Model { get; }

    /// <summary>Tokenizes the prompt; throws <see cref="ArgumentException"/> when it is empty or does not fit the context.</summary>
    PromptCheck CheckPrompt(JobRequest request);

    /// <summary>Generates one candidate with its seed; the result's <c>Replica</c> is filled in by the replica grain.</summary>
    Task<CandidateResult> GenerateAsync(CandidateWork work, CancellationToken cancellationToken);
}

/// <summary>Live load of one engine.</summary>
public readonly record struct EngineLoad(int ActiveSequences, int QueuedSequences, int Slots, double TokensPerSecond, long GeneratedTokens);
