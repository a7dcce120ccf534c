using MetaStone.Reasoning;

namespace MetaStone.Reasoning.Tests;

public sealed class StepMaskTests
{
    private const int P = 1, S = 9, A = 2, B = 3, C = 4, D = 5, Think = 7, EndThink = 8;
    private static readonly StepTokenSet Rules = new(new HashSet<int> { S }, Think, EndThink);

    [Fact]
    public void ToySequenceFromReferenceScoresPositions5And8()
    {
        // sprm-reference.md §2.6: [P, P, <think>, S, a, b, S, S, c, S, </think>, d, S]
        int[] seq = [P, P, Think, S, A, B, S, S, C, S, EndThink, D, S];
        Assert.Equal([5, 8], StepMask.FeaturePositions(seq, Rules));
    }

    [Fact]
    public void QwenWorkedExampleReadsFeatureBeforeStepToken()
    {
        // §2.7: "<think>\nLet me think.\n\n</think>" with Qwen3 ids: one step, feature at index 4.
        var rules = new StepTokenSet(new HashSet<int> { 382 }, 151667, 151668);
        int[] seq = [151667, 198, 10061, 752, 1744, 382, 151668];
        Assert.Equal([4], StepMask.FeaturePositions(seq, rules));
    }

    [Fact]
    public void WithoutThinkTagTheSpanStartsAtTheResponse()
    {
        int[] seq = [A, S, B, /* response: */ C, S, D, S, EndThink, A, S];
        Assert.Equal([3, 5], StepMask.FeaturePositions(seq, Rules, responseStart: 3));
    }

    [Fact]
    public void UnclosedThinkingIsScoredToTheEnd()
    {
        int[] seq = [Think, A, S, B, S];
        Assert.Equal([1, 3], StepMask.FeaturePositions(seq, Rules));
    }

    [Fact]
    public void StepTokenAtSequenceStartIsNeverScored()
    {
        int[] seq = [S, A, S];
        Assert.Equal([1], StepMask.FeaturePositions(seq, Rules, responseStart: 0));
    }

    [Fact]
    public void IncrementalTrackerAgreesWithWholeSequenceMask()
    {
        var rng = new Random(7);
        for (int trial = 0; trial < 500; trial++)
        {
            var seq = Enumerable.Range(0, rng.Next(1, 40)).Select(_ => rng.Next(0, 10)).ToArray();
            int responseStart = rng.Next(0, seq.Length + 1);
            var tracker = new StepTracker(Rules);
            var incremental = new List<int>();
            for (int t = 0; t < seq.Length; t++)
            {
                if (t == responseStart) tracker.BeginResponse();
                if (tracker.Observe(seq[t])) incremental.Add(t - 1);
            }
            Assert.Equal(StepMask.FeaturePositions(seq, Rules, responseStart), incremental);
        }
    }
}

public sealed class TrajectoryScoreTests
{
    [Fact]
    public void GeometricMeanMatchesReferenceFormula()
    {
        double[] p = [0.9, 0.5, 0.2];
        double expected = Math.Exp((Math.Log(0.9) + Math.Log(0.5) + Math.Log(0.2)) / 3);
        Assert.Equal(expected, TrajectoryScore.Aggregate(p), 12);
    }

    [Fact]
    public void NoStepsScoresZero() => Assert.Equal(0.0, TrajectoryScore.Aggregate([]));

    [Fact]
    public void ZeroProbabilityIsClampedNotNegativeInfinity()
    {
        double s = TrajectoryScore.Aggregate([0.0, 1.0]);
        Assert.Equal(Math.Sqrt(1e-10), s, 15);
    }

    [Fact]
    public void MinLastMean()
    {
        double[] p = [0.9, 0.3, 0.6];
        Assert.Equal(0.3, TrajectoryScore.Aggregate(p, ScoreAggregation.Min));
        Assert.Equal(0.6, TrajectoryScore.Aggregate(p, ScoreAggregation.Last));
        Assert.Equal(0.6, TrajectoryScore.Aggregate(p, ScoreAggregation.Mean), 12);
    }
}

public sealed class SelectionTests
{
    [Fact]
    public void BestOfNFirstIndexWinsTies()
    {
        ScoredCandidate[] c = [new(0, 0.5, "1"), new(1, 0.9, "2"), new(2, 0.9, "3")];
        Assert.Equal(1, CandidateSelection.SelectWinner(c));
    }

    [Fact]
    public void MajorityVoteTieGoesToEarliestAnswer()
    {
        ScoredCandidate[] c = [new(0, 0.1, "7"), new(1, 0.9, "8"), new(2, 0.2, "8"), new(3, 0.3, "7")];
        // 7 and 8 both have two votes; 7 appeared first; its best-scored holder is index 3.
        Assert.Equal(3, CandidateSelection.SelectWinner(c, SelectionMethod.MajorityVote));
    }

    [Fact]
    public void WeightedVoteSumsScores()
    {
        ScoredCandidate[] c = [new(0, 0.3, "7"), new(1, 0.3, "7"), new(2, 0.9, "8")];
        Assert.Equal(2, CandidateSelection.SelectWinner(c, SelectionMethod.SprmWeightedVote));
        Assert.Equal(0, CandidateSelection.SelectWinner(c, SelectionMethod.MajorityVote));
    }

    /// <summary>Issue 11 item 9: float noise (1e-15, or fp32 rounding from a different batch) must not pick the winner:
    /// scores within <see cref="CandidateSelection.ScoreTieTolerance"/> of the top tie, and the lowest index wins.</summary>
    [Fact]
    public void BestOfNTiesWithinTheToleranceGoToTheLowestIndex()
    {
        ScoredCandidate[] noise = [new(0, 0.3, "1"), new(1, 0.7, "2"), new(2, 0.7 + 1e-15, "3"), new(3, 0.7 + 4e-7, "4")];
        Assert.Equal(1, CandidateSelection.SelectWinner(noise));
        // Beyond the tolerance a higher score still wins.
        ScoredCandidate[] real = [new(0, 0.7, "1"), new(1, 0.7 + 2e-6, "2")];
        Assert.Equal(1, CandidateSelection.SelectWinner(real));
        // The tie set is measured from the maximum, so the result does not depend on the order of comparisons.
        ScoredCandidate[] chain = [new(0, 0.7, "1"), new(1, 0.7 + 0.8e-6, "2"), new(2, 0.7 + 1.6e-6, "3")];
        Assert.Equal(1, CandidateSelection.SelectWinner(chain));
    }

    [Fact]
    public void VoteTiesWithinTheToleranceGoToTheEarliestAnswerAndItsLowestIndex()
    {
        // Weighted: 0.6 vs 0.6 + 1e-12 is a tie → answer "7" (first seen); within "7", 0.3 vs 0.3 + 1e-15 → index 0.
        ScoredCandidate[] c = [new(0, 0.3, "7"), new(1, 0.6 + 1e-12, "8"), new(2, 0.3 + 1e-15, "7")];
        Assert.Equal(0, CandidateSelection.SelectWinner(c, SelectionMethod.SprmWeightedVote));
        Assert.Equal(0, CandidateSelection.SelectWinner(c, SelectionMethod.MajorityVote));
    }

    [Fact]
    public void VotesWithoutAnswersFallBackToBestOfN()
    {
        ScoredCandidate[] c = [new(0, 0.3, null), new(1, 0.8, null)];
        Assert.Equal(1, CandidateSelection.SelectWinner(c, SelectionMethod.MajorityVote));
    }

}

public sealed class ScalingStatisticsTests
{
    private static GradedCandidate C(double score, string answer, bool correct) => new(score, answer, correct);

    [Fact]
    public void DisjointGroupsPickTheBestScorePerGroup()
    {
        // One problem, 4 candidates, k = 2 → groups {0,1} and {2,3}.
        var p = new[] { C(0.9, "1", false), C(0.1, "2", true), C(0.2, "2", true), C(0.8, "2", true) };
        var at2 = ScalingStatistics.AtK([p], 2);
        Assert.Equal(0.5, at2.SprmBestOfN);   // group 1 picks the wrong one, group 2 the right one
        Assert.Equal(0.75, at2.RandomPick, 12);
        Assert.Equal(1.0, at2.OraclePassAtK);
        Assert.Equal(2, at2.Groups);
        var at4 = ScalingStatistics.AtK([p], 4);
        Assert.Equal(0.0, at4.SprmBestOfN);
        Assert.Equal(1.0, at4.MajorityVote);  // "2" has three votes
    }

    [Fact]
    public void MajorityTieGoesToTheEarliestAnswer()
    {
        var p = new[] { C(0.1, "5", true), C(0.9, "6", false), C(0.5, "6", false), C(0.2, "5", true) };
        Assert.Equal(1.0, ScalingStatistics.AtK([p], 4).MajorityVote);
    }

    [Fact]
    public void KLargerThanAvailableUsesEverythingOnce()
    {
        var p = new[] { C(0.3, "1", true), C(0.2, "2", false) };
        var r = ScalingStatistics.AtK([p], 8);
        Assert.Equal(1, r.Groups);
        Assert.Equal(1.0, r.SprmBestOfN);
    }

    [Fact]
    public void AurocOfPerfectRandomAndInvertedScores()
    {
        bool[] labels = [true, true, false, false];
        Assert.Equal(1.0, ScalingStatistics.Auroc([0.9, 0.8, 0.2, 0.1], labels));
        Assert.Equal(0.0, ScalingStatistics.Auroc([0.1, 0.2, 0.8, 0.9], labels));
        Assert.Equal(0.5, ScalingStatistics.Auroc([0.5, 0.5, 0.5, 0.5], labels));
        Assert.Equal(0.75, ScalingStatistics.Auroc([0.9, 0.3, 0.5, 0.1], labels));
        Assert.True(double.IsNaN(ScalingStatistics.Auroc([0.1, 0.2], [true, true])));
    }
}
