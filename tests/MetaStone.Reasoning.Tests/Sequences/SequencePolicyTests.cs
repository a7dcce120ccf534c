using MetaStone.Reasoning.Sequences;

namespace MetaStone.Reasoning.Tests.Sequences;

/// <summary>The per-sequence policy (budget forcing, stop rules, limits, step tracking), token by token, without a model.</summary>
public sealed class SequencePolicyTests
{
    private const int Eos = 1, Stop = 6, Step = 9, A = 2, B = 3, Think = 7, EndThink = 8;
    private static readonly StepTokenSet Steps = new(new HashSet<int> { Step }, Think, EndThink);
    private static readonly int[] ThinkingPrompt = [A, B, Think];

    private static SequenceRules Rules(int maxNew = 100, int maxLength = 1000, int? thinking = null, int? answer = null, bool score = true,
        StepTokenSet? steps = null) => new SequenceRules
        {
            StepRules = steps ?? Steps,
            StopTokenIds = new HashSet<int> { Eos, Stop },
            MaxNewTokens = maxNew,
            MaxSequenceLength = maxLength,
            ThinkingBudget = thinking,
            AnswerBudget = answer,
            ScoreSteps = score,
        }.Validated();

    /// <summary>Feeds sampled tokens until the policy ends the sequence (or the tokens run out).</summary>
    private static List<TokenDecision> Run(SequencePolicy policy, IEnumerable<int> sampled)
    {
        var decisions = new List<TokenDecision>();
        foreach (int token in sampled)
        {
            var decision = policy.Advance(token);
            decisions.Add(decision);
            if (decision.End is not null) break;
        }
        return decisions;
    }

    [Fact]
    public void AStopTokenEndsTheSequenceAndIsKept()
    {
        var policy = new SequencePolicy(Rules(), ThinkingPrompt);
        var decisions = Run(policy, [A, B, Stop, A]);
        Assert.Equal(3, decisions.Count);
        Assert.Equal(SequenceEnd.StopToken, decisions[^1].End);
        Assert.Equal([A, B, Stop], policy.ResponseIds);
        Assert.Equal(SequenceEnd.StopToken, policy.End);
    }

    [Fact]
    public void MaxNewTokensEndsAfterExactlyThatManyTokens()
    {
        var policy = new SequencePolicy(Rules(maxNew: 5), ThinkingPrompt);
        var decisions = Run(policy, Enumerable.Repeat(A, 50));
        Assert.Equal(5, policy.ResponseIds.Count);
        Assert.Equal(SequenceEnd.MaxNewTokens, decisions[^1].End);
        Assert.All(decisions.SkipLast(1), d => Assert.Null(d.End));
    }

    [Fact]
    public void AStopTokenOnTheLastAllowedTokenCountsAsAStop()
    {
        var policy = new SequencePolicy(Rules(maxNew: 3), ThinkingPrompt);
        Run(policy, [A, B, Eos]);
        Assert.Equal(SequenceEnd.StopToken, policy.End);
    }

    [Fact]
    public void TheContextWindowEndsTheSequenceWhenPromptPlusResponseFillsIt()
    {
        var policy = new SequencePolicy(Rules(maxNew: 100, maxLength: 10), ThinkingPrompt);
        Run(policy, Enumerable.Repeat(A, 50));
        Assert.Equal(10 - ThinkingPrompt.Length, policy.ResponseIds.Count);
        Assert.Equal(10, policy.Position);
        Assert.Equal(SequenceEnd.ContextWindow, policy.End);
    }

    [Fact]
    public void PositionsCountFromThePrompt()
    {
        var policy = new SequencePolicy(Rules(), ThinkingPrompt);
        var decisions = Run(policy, [A, B, A]);
        Assert.Equal([3, 4, 5], decisions.Select(d => d.Position));
        Assert.Equal(6, policy.Position);
        Assert.Equal(3, policy.PromptLength);
    }

    [Fact]
    public void ASpentThinkingBudgetForcesEndOfThinkingWhateverIsSampled()
    {
        var policy = new SequencePolicy(Rules(thinking: 4), ThinkingPrompt);
        var decisions = Run(policy, Enumerable.Repeat(A, 8));
        // 4 thinking tokens, then </think> although A was sampled, then the answer.
        Assert.Equal([A, A, A, A, EndThink, A, A, A], policy.ResponseIds);
        Assert.Equal(4, policy.ThinkingTokens);
        Assert.Equal(3, policy.AnswerTokens);
        Assert.True(policy.ThinkingForcedClosed);
        Assert.False(policy.InsideThinking);
        Assert.Null(decisions[3].End);
        Assert.Equal(EndThink, decisions[4].Token);
    }

    [Fact]
    public void TheForcedTokenIsAnnouncedBeforeTheStepThatTakesIt()
    {
        var policy = new SequencePolicy(Rules(thinking: 2), ThinkingPrompt);
        policy.Advance(A);
        Assert.Null(policy.ForcedToken);
        policy.Advance(A);
        Assert.Equal(EndThink, policy.ForcedToken);
        Assert.Equal(EndThink, policy.Advance(B).Token);
        Assert.Null(policy.ForcedToken);
    }

    [Fact]
    public void AZeroThinkingBudgetClosesTheThoughtBeforeTheFirstToken()
    {
        var policy = new SequencePolicy(Rules(thinking: 0), ThinkingPrompt);
        Assert.Equal(EndThink, policy.ForcedToken);
        Assert.Equal(EndThink, policy.Advance(A).Token);
        Assert.Equal(0, policy.ThinkingTokens);
        Assert.True(policy.ThinkingForcedClosed);
    }

    [Fact]
    public void AThoughtTheModelClosesItselfIsNotForced()
    {
        var policy = new SequencePolicy(Rules(thinking: 10), ThinkingPrompt);
        Run(policy, [A, B, EndThink, A, A, A, A, A, A, A, A, A, A, A, A]);
        Assert.Equal(2, policy.ThinkingTokens);
        Assert.Equal(12, policy.AnswerTokens);
        Assert.False(policy.ThinkingForcedClosed);
        Assert.DoesNotContain(EndThink, policy.ResponseIds.Skip(3));
    }

    [Fact]
    public void WithoutAnEndOfThinkingTokenTheBudgetCannotForceAnything()
    {
        var rules = Rules(thinking: 2, steps: new StepTokenSet(new HashSet<int> { Step }, Think, ThinkEndId: null));
        var policy = new SequencePolicy(rules, ThinkingPrompt);
        Run(policy, Enumerable.Repeat(A, 6));
        Assert.Equal(Enumerable.Repeat(A, 6), policy.ResponseIds);
        Assert.False(policy.ThinkingForcedClosed);
        Assert.Equal(6, policy.ThinkingTokens);
    }

    [Fact]
    public void TheAnswerBudgetEndsTheSequenceAfterThatManyAnswerTokens()
    {
        var policy = new SequencePolicy(Rules(thinking: 3, answer: 2), ThinkingPrompt);
        var decisions = Run(policy, Enumerable.Repeat(A, 20));
        Assert.Equal([A, A, A, EndThink, A, A], policy.ResponseIds);
        Assert.Equal(2, policy.AnswerTokens);
        Assert.Equal(SequenceEnd.AnswerBudget, decisions[^1].End);
    }

    [Fact]
    public void AnAnswerWithoutAThoughtHasNoAnswerBudget()
    {
        // No </think> ever: the whole response is thinking, so the answer budget never applies.
        var policy = new SequencePolicy(Rules(maxNew: 8, answer: 1), ThinkingPrompt);
        Run(policy, Enumerable.Repeat(A, 20));
        Assert.Equal(SequenceEnd.MaxNewTokens, policy.End);
        Assert.Equal(0, policy.AnswerTokens);
    }

    [Fact]
    public void StepEndsAreTheTokensAfterTheStepMaskPositions()
    {
        // The same rules as the re-encoding scorer: a step ends at t when the mask picks feature position t - 1.
        var random = new Random(5);
        for (int trial = 0; trial < 200; trial++)
        {
            int[] vocabulary = [A, B, Step, Step, Think, EndThink];
            int[] prompt = trial % 3 == 0 ? [A, B] : ThinkingPrompt;
            var response = Enumerable.Range(0, 30).Select(_ => vocabulary[random.Next(vocabulary.Length)]).ToList();
            var policy = new SequencePolicy(Rules(), prompt);
            var ends = Run(policy, response).Where(d => d.EndsStep).Select(d => d.Position - 1).ToList();
            var expected = StepMask.FeaturePositions([.. prompt, .. response], Steps, responseStart: prompt.Length);
            Assert.Equal(expected, ends);
        }
    }

    [Fact]
    public void StepsAreNotReportedWhenNobodyScores()
    {
        var scored = new SequencePolicy(Rules(), ThinkingPrompt);
        var unscored = new SequencePolicy(Rules(score: false), ThinkingPrompt);
        int[] response = [A, Step, B, Step, A, Step];
        Assert.Equal(3, Run(scored, response).Count(d => d.EndsStep));
        Assert.DoesNotContain(Run(unscored, response), d => d.EndsStep);
    }

    [Fact]
    public void WithoutStepRulesNothingIsAStepOrForced()
    {
        var rules = new SequenceRules { MaxNewTokens = 10, MaxSequenceLength = 100, ThinkingBudget = 1 };
        var policy = new SequencePolicy(rules, ThinkingPrompt);
        var decisions = Run(policy, [A, Step, Think, EndThink, A]);
        Assert.DoesNotContain(decisions, d => d.EndsStep);
        Assert.False(policy.ThinkingForcedClosed);
        Assert.Equal([A, Step, Think, EndThink, A], policy.ResponseIds);
    }

    [Fact]
    public void AnEndedSequenceTakesNoMoreTokens()
    {
        var policy = new SequencePolicy(Rules(maxNew: 1), ThinkingPrompt);
        policy.Advance(A);
        Assert.Throws<InvalidOperationException>(() => policy.Advance(A));
    }

    [Fact]
    public void InvalidLimitsAreRejectedOncePerRequest()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Rules(maxNew: 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => Rules(thinking: -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => Rules(answer: 0));
    }
}
