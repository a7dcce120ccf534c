using MetaStone.Reasoning;

namespace MetaStone.Model.Generation;

/// <summary>Sampling settings of one request. Defaults are MetaStone-S1's (temperature 0.6, top-p 0.95, repetition penalty 1.05).</summary>
public sealed record SamplingOptions
{
    /// <summary>0 means greedy.</summary>
    public double Temperature { get; init; } = 0.6;
    public double TopP { get; init; } = 0.95;
    /// <summary>0 means off.</summary>
    public int TopK { get; init; }
    /// <summary>HF-style: logits of tokens already in the sequence (prompt included) divided (if &gt; 0) or multiplied by it.</summary>
    public double RepetitionPenalty { get; init; } = 1.05;
    /// <summary>Limit on generated tokens (thinking + answer).</summary>
    public int MaxNewTokens { get; init; } = 1024;
    /// <summary>Limit on tokens inside &lt;think&gt;…&lt;/think&gt;; when reached, &lt;/think&gt; is forced. Null = no separate limit.</summary>
    public int? ThinkingBudget { get; init; }
    /// <summary>Limit on tokens after &lt;/think&gt;. Null = only <see cref="MaxNewTokens"/> applies.</summary>
    public int? AnswerBudget { get; init; }

    public static SamplingOptions Greedy => new() { Temperature = 0, TopP = 1, RepetitionPenalty = 1 };

    public void Validate()
    {
        if (!(Temperature >= 0) || double.IsInfinity(Temperature)) throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "temperature must be a finite number ≥ 0");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "top-p must be in (0, 1]");
        if (TopK < 0) throw new ArgumentOutOfRangeException(nameof(TopK), TopK, "top-k must be ≥ 0 (0 = off)");
        if (!(RepetitionPenalty > 0) || double.IsInfinity(RepetitionPenalty)) throw new ArgumentOutOfRangeException(nameof(RepetitionPenalty), RepetitionPenalty, "repetition penalty must be > 0");
        if (MaxNewTokens < 1) throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), MaxNewTokens, "max new tokens must be ≥ 1");
        if (ThinkingBudget is < 0) throw new ArgumentOutOfRangeException(nameof(ThinkingBudget), ThinkingBudget, "thinking budget must be ≥ 0");
        if (AnswerBudget is < 1) throw new ArgumentOutOfRangeException(nameof(AnswerBudget), AnswerBudget, "answer budget must be ≥ 1");
    }
}

/// <summary>
/// One query's worth of work for the engine: a prompt, and one seed per candidate trajectory.
/// Candidates with the same prompt share one prefill (also across requests, while any is running).
/// </summary>
public sealed record GenerationRequest
{
    public required IReadOnlyList<int> PromptIds { get; init; }
    public required IReadOnlyList<long> Seeds { get; init; }
    public SamplingOptions Sampling { get; init; } = new();
    /// <summary>Extra stop tokens besides the engine's end-of-sequence ids.</summary>
    public IReadOnlyList<int> StopTokenIds { get; init; } = [];
    /// <summary>Score steps in flight with the SPRM head (when the engine has one).</summary>
    public bool ScoreSteps { get; init; } = true;
    /// <summary>Index of <see cref="Seeds"/>[0] within the caller's job (reported back in results).</summary>
    public int FirstCandidateIndex { get; init; }
    /// <summary>Emit a <see cref="CandidateUpdate"/> per generated token (for live text); steps and finishes are always emitted.</summary>
    public bool StreamTokens { get; init; }
}

public enum FinishReason
{
    /// <summary>An end-of-sequence or stop token was generated.</summary>
    Stop,
    /// <summary>The token limit or the context window was reached.</summary>
    Length,
    Cancelled,
}

/// <summary>One scored reasoning step.</summary>
/// <param name="StepTokenPosition">Position of the step token in prompt + response.</param>
/// <param name="ResponseIndex">Index of the step token within the response.</param>
/// <param name="Logit">SPRM head logit, read at the position before the step token.</param>
public sealed record StepScore(int StepTokenPosition, int ResponseIndex, double Logit)
{
    public double Score => TrajectoryScore.Sigmoid(Logit);
}

/// <summary>A finished candidate trajectory.</summary>
public sealed record Trajectory
{
    public required int CandidateIndex { get; init; }
    public required long Seed { get; init; }
    public required int PromptTokens { get; init; }
    /// <summary>Generated token ids (including a final stop token when there was one).</summary>
    public required int[] ResponseIds { get; init; }
    public required FinishReason FinishReason { get; init; }
    /// <summary>Tokens generated inside the thinking span (excluding the &lt;/think&gt; tag).</summary>
    public required int ThinkingTokens { get; init; }
    /// <summary>Tokens generated after &lt;/think&gt;.</summary>
    public required int AnswerTokens { get; init; }
    public required bool ThinkingForcedClosed { get; init; }
    public required IReadOnlyList<StepScore> Steps { get; init; }

    public double Score(ScoreAggregation how = ScoreAggregation.GeometricMean) =>
        TrajectoryScore.Aggregate(Steps.Select(s => s.Score).ToList(), how);
}

/// <summary>What a <see cref="CandidateUpdate"/> reports. <see cref="Restarted"/>: an engine step that held the
/// candidate failed and the candidate starts again from its prompt with the same seed; a watcher drops the
/// tokens and steps it had received for it.</summary>
public enum CandidateUpdateKind { Started, Token, Step, Finished, Restarted }

/// <summary>Progress of one candidate, as streamed to a watcher.</summary>
public sealed record CandidateUpdate(CandidateUpdateKind Kind, int CandidateIndex, int? TokenId = null, StepScore? Step = null, Trajectory? Result = null);

/// <summary>Live engine load, for replica registration and load-aware placement.</summary>
public sealed record EngineStats
{
    public int ActiveSequences { get; init; }
    public int QueuedSequences { get; init; }
    public int Slots { get; init; }
    public long GeneratedTokens { get; init; }
    public long PrefillTokensComputed { get; init; }
    public long PrefillTokensReused { get; init; }
    public long DecodeSteps { get; init; }
    public long StepsScored { get; init; }
    /// <summary>Engine steps (prefill or decode) that threw; their sequences were restarted or, past
    /// <see cref="EngineOptions.MaxAttempts"/>, failed alone.</summary>
    public long FailedSteps { get; init; }
    /// <summary>Candidates restarted after a failed step.</summary>
    public long RestartedCandidates { get; init; }
    /// <summary>Candidates failed by an engine error (after their attempts ran out).</summary>
    public long FailedCandidates { get; init; }
    /// <summary>Generated tokens per second over the last few seconds of work.</summary>
    public double TokensPerSecond { get; init; }
}
