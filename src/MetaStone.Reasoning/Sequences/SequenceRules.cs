namespace MetaStone.Reasoning.Sequences;

/// <summary>
/// What one generated sequence must obey, fixed for all candidates of a request: its stop tokens, token limits, thinking
/// budget and the step rules that say where a reasoning step ends. <see cref="SequencePolicy"/> applies them token by token.
/// </summary>
public sealed record SequenceRules
{
    private static readonly IReadOnlySet<int> NoTokens = new HashSet<int>();

    /// <summary>Step and thinking tags; null means no step tracking and no thinking budget (nothing to force).</summary>
    public StepTokenSet? StepRules { get; init; }
    /// <summary>Tokens that end the sequence (end-of-sequence ids and the request's own stop tokens); the stop token is kept in the response.</summary>
    public IReadOnlySet<int> StopTokenIds { get; init; } = NoTokens;
    /// <summary>Limit on generated tokens (thinking + answer).</summary>
    public required int MaxNewTokens { get; init; }
    /// <summary>Limit on prompt + response tokens (the context window the sequence runs in).</summary>
    public required int MaxSequenceLength { get; init; }
    /// <summary>Tokens allowed inside the thinking span before <c>&lt;/think&gt;</c> is forced; null = no separate limit.</summary>
    public int? ThinkingBudget { get; init; }
    /// <summary>Tokens allowed after <c>&lt;/think&gt;</c>; null = only <see cref="MaxNewTokens"/> applies.</summary>
    public int? AnswerBudget { get; init; }
    /// <summary>Report where steps end (so the SPRM head scores them); false when nobody scores.</summary>
    public bool ScoreSteps { get; init; } = true;

    /// <summary>Checks the limits once per request, so the per-token path need not.</summary>
    public SequenceRules Validated()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxNewTokens, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxSequenceLength, 1);
        if (ThinkingBudget is < 0) throw new ArgumentOutOfRangeException(nameof(ThinkingBudget), ThinkingBudget, "thinking budget must be ≥ 0");
        if (AnswerBudget is < 1) throw new ArgumentOutOfRangeException(nameof(AnswerBudget), AnswerBudget, "answer budget must be ≥ 1");
        return this;
    }
}

/// <summary>Why a sequence ended.</summary>
public enum SequenceEnd
{
    /// <summary>A stop (or end-of-sequence) token was generated.</summary>
    StopToken,
    /// <summary><see cref="SequenceRules.MaxNewTokens"/> tokens were generated.</summary>
    MaxNewTokens,
    /// <summary>Prompt + response filled <see cref="SequenceRules.MaxSequenceLength"/>.</summary>
    ContextWindow,
    /// <summary><see cref="SequenceRules.AnswerBudget"/> tokens followed <c>&lt;/think&gt;</c>.</summary>
    AnswerBudget,
}
