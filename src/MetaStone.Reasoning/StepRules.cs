namespace MetaStone.Reasoning;

/// <summary>
/// The token ids the SPRM step rules need. Looked up from the tokenizer, never hard-coded:
/// the Qwen vocabulary has <c>.\n\n</c> = 382, a project-built tokenizer has its own ids.
/// </summary>
/// <param name="StepTokenIds">Ids that end a reasoning step (English mode: the single id of <c>".\n\n"</c>).</param>
/// <param name="ThinkStartId"><c>&lt;think&gt;</c>, or null when the vocabulary has none.</param>
/// <param name="ThinkEndId"><c>&lt;/think&gt;</c>, or null when the vocabulary has none.</param>
public sealed record StepTokenSet(IReadOnlySet<int> StepTokenIds, int? ThinkStartId, int? ThinkEndId)
{
    public bool IsStep(int id) => StepTokenIds.Contains(id);
}

/// <summary>
/// Which positions of a token sequence the SPRM head scores (sprm-reference.md §2.3), for a whole
/// sequence at once. <see cref="StepTracker"/> applies the same rules incrementally while decoding, and
/// both are the same code path, so in-flight scores and re-encoded scores cannot disagree on positions.
/// </summary>
public static class StepMask
{
    /// <summary>
    /// Returns the positions whose hidden state is fed to the head: for every step token t that is the
    /// first of a run, does not immediately follow <c>&lt;think&gt;</c>, and lies strictly inside the
    /// thinking span, the position t−1 (the last content token of the step).
    /// </summary>
    /// <param name="tokens">Prompt followed by response.</param>
    /// <param name="responseStart">Index of the first response token (0 when the whole sequence is the response).</param>
    /// <remarks>
    /// Thinking span: from the first <c>&lt;think&gt;</c> to the first <c>&lt;/think&gt;</c> after it.
    /// When no <c>&lt;think&gt;</c> occurs before the response, the span starts at the response start
    /// (sprm-reference §2.5: the chat templates put <c>&lt;think&gt;</c> in the prompt, plain prompts have
    /// none). With no <c>&lt;/think&gt;</c> the span runs to the end: an unfinished thought is still thought.
    /// The released scorer agrees on every sequence in which each tag occurs once.
    /// </remarks>
    public static IReadOnlyList<int> FeaturePositions(IReadOnlyList<int> tokens, StepTokenSet rules, int responseStart = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(responseStart);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(responseStart, tokens.Count);
        var result = new List<int>();
        var tracker = new StepTracker(rules);
        for (int t = 0; t < tokens.Count; t++)
        {
            if (t == responseStart) tracker.BeginResponse();
            if (tracker.Observe(tokens[t]))
                result.Add(t - 1);
        }
        return result;
    }
}

/// <summary>
/// Incremental form of the step rules, fed one token at a time in sequence order: prompt tokens, then
/// <see cref="BeginResponse"/>, then generated tokens. <see cref="Observe"/> answers whether the token
/// just fed is a scored step token, in which case the feature to score is the hidden state computed at
/// the previous position — which the decode step that sampled this token has just produced.
/// </summary>
public sealed class StepTracker(StepTokenSet rules)
{
    private int _previous = -1;
    private bool _thinkStarted;
    private bool _thinkEnded;
    private bool _inResponse;

    /// <summary>Number of tokens observed so far (= the position of the next token).</summary>
    public int Position { get; private set; }

    /// <summary>True while tokens are inside the thinking span.</summary>
    public bool InsideThinking => !_thinkEnded && (_thinkStarted || _inResponse);

    /// <summary>True once <c>&lt;/think&gt;</c> closed the span.</summary>
    public bool ThinkingEnded => _thinkEnded;

    /// <summary>Marks the boundary between prompt and response.</summary>
    public void BeginResponse() => _inResponse = true;

    /// <summary>Feeds the next token; true when it is a scored step token.</summary>
    public bool Observe(int token)
    {
        bool scored = false;
        if (rules.ThinkStartId is int start && token == start)
        {
            _thinkStarted = true;
        }
        else if (rules.ThinkEndId is int end && token == end)
        {
            if (InsideThinking) _thinkEnded = true;
        }
        else if (rules.IsStep(token) && InsideThinking && Position > 0)
        {
            bool firstOfRun = !rules.IsStep(_previous);
            bool rightAfterThinkStart = rules.ThinkStartId is int s && _previous == s;
            scored = firstOfRun && !rightAfterThinkStart;
        }
        _previous = token;
        Position++;
        return scored;
    }
}
