namespace MetaStone.Reasoning.Sequences;

/// <summary>What <see cref="SequencePolicy.Advance"/> made of one decode step's token.</summary>
/// <param name="Token">The token appended: the sampled one, or <c>&lt;/think&gt;</c> when the thinking budget forced it.</param>
/// <param name="Position">Where the token sits in prompt + response.</param>
/// <param name="EndsStep">The token ends a reasoning step: score the hidden state at <paramref name="Position"/> − 1,
/// which the decode step that produced this token has just computed.</param>
/// <param name="End">Set when the sequence is finished with this token.</param>
public readonly record struct TokenDecision(int Token, int Position, bool EndsStep, SequenceEnd? End);

/// <summary>
/// The per-sequence policy of generation, as pure code: which token a sequence takes next when its thinking budget is spent
/// (<c>&lt;/think&gt;</c> is forced and the answer follows under its own budget), when it ends (stop tokens, max new tokens,
/// context window, answer budget), and which tokens end a reasoning step (the <see cref="StepTracker"/> rules, shared with
/// <see cref="StepMask"/>, so in-flight and re-encoded scores agree on positions). The engine samples, this decides.
/// </summary>
/// <remarks>
/// Order of checks after each token, as the engine has always applied them: a stop token wins, then the token limit or
/// context window, then the answer budget; only a sequence that goes on can have <c>&lt;/think&gt;</c> forced next.
/// </remarks>
public sealed class SequencePolicy
{
    private static readonly StepTokenSet NoStepRules = new(new HashSet<int>(), null, null);

    private readonly SequenceRules _rules;
    private readonly StepTracker _tracker;
    private readonly int? _thinkEndId;
    private readonly List<int> _response = [];

    /// <summary>Starts a sequence after <paramref name="promptIds"/> (the step rules see the prompt, e.g. a <c>&lt;think&gt;</c> in it).</summary>
    public SequencePolicy(SequenceRules rules, IReadOnlyList<int> promptIds)
    {
        ArgumentNullException.ThrowIfNull(rules);
        ArgumentNullException.ThrowIfNull(promptIds);
        _rules = rules;
        _thinkEndId = rules.StepRules?.ThinkEndId;
        _tracker = new StepTracker(rules.StepRules ?? NoStepRules);
        foreach (int id in promptIds) _tracker.Observe(id);
        _tracker.BeginResponse();
        PromptLength = promptIds.Count;
        Position = promptIds.Count;
        // A zero thinking budget closes the thought before the first generated token.
        if (rules.ThinkingBudget == 0 && _thinkEndId is int thinkEnd && _tracker.InsideThinking) ForceThinkEnd(thinkEnd);
    }

    public int PromptLength { get; }
    /// <summary>Prompt + response tokens so far: the position of the next token.</summary>
    public int Position { get; private set; }
    public IReadOnlyList<int> ResponseIds => _response;
    /// <summary>Tokens generated inside the thinking span (the closing tag excluded).</summary>
    public int ThinkingTokens { get; private set; }
    /// <summary>Tokens generated after <c>&lt;/think&gt;</c>.</summary>
    public int AnswerTokens { get; private set; }
    /// <summary>The thinking budget closed the thought (rather than the model).</summary>
    public bool ThinkingForcedClosed { get; private set; }
    /// <summary>The token the next step takes whatever is sampled (a forced <c>&lt;/think&gt;</c>), or null.</summary>
    public int? ForcedToken { get; private set; }
    public bool InsideThinking => _tracker.InsideThinking;
    /// <summary>Why the sequence ended; null while it runs.</summary>
    public SequenceEnd? End { get; private set; }

    /// <summary>
    /// Takes one decode step's sampled token (ignored when a token is forced), appends the chosen token and says whether it
    /// ends a step and whether the sequence is finished. The caller keeps drawing a sample for a forced step too, so a
    /// candidate's random stream does not depend on when its budget ran out.
    /// </summary>
    public TokenDecision Advance(int sampledToken)
    {
        if (End is not null) throw new InvalidOperationException($"the sequence already ended ({End})");
        int token = ForcedToken ?? sampledToken;
        ForcedToken = null;
        int position = Position;
        bool wasThinking = _tracker.InsideThinking;
        bool endsStep = _tracker.Observe(token) && _rules.ScoreSteps;
        _response.Add(token);
        Position++;
        if (wasThinking && _tracker.InsideThinking) ThinkingTokens++;
        else if (!_tracker.InsideThinking && _tracker.ThinkingEnded && token != _thinkEndId) AnswerTokens++;

        if (_rules.StopTokenIds.Contains(token)) End = SequenceEnd.StopToken;
        else if (_response.Count >= _rules.MaxNewTokens) End = SequenceEnd.MaxNewTokens;
        else if (Position >= _rules.MaxSequenceLength) End = SequenceEnd.ContextWindow;
        else if (_rules.AnswerBudget is int answerBudget && AnswerTokens >= answerBudget) End = SequenceEnd.AnswerBudget;
        else if (_rules.ThinkingBudget is int thinkingBudget && _tracker.InsideThinking && ThinkingTokens >= thinkingBudget && _thinkEndId is int thinkEnd)
            ForceThinkEnd(thinkEnd); // budget spent: close the thought, the answer follows under its own limit
        return new TokenDecision(token, position, endsStep, End);
    }

    private void ForceThinkEnd(int thinkEnd)
    {
        ForcedToken = thinkEnd;
        ThinkingForcedClosed = true;
    }
}
