using MetaStone.Reasoning;
using MetaStone.Reasoning.Scaling;

namespace MetaStone.Reasoning.Tests;

public sealed class ScalingLawFitTests
{
    [Fact]
    public void ExactPointsGiveBackTheirLawWithRSquaredOne()
    {
        const double a = -0.85, b = 0.042;
        var points = new[] { 1e9, 3e9, 1e10, 4e10, 2e11 }.Select(c => new ComputePoint(c, a + b * Math.Log(c))).ToList();
        var fit = LogLinearFit.Fit(points);
        Assert.Equal(a, fit.A, 9);
        Assert.Equal(b, fit.B, 9);
        Assert.Equal(1.0, fit.RSquared, 9);
        Assert.Equal(5, fit.Points);
        Assert.Equal(b * Math.Log(2), fit.GainPerDoubling, 12);
        Assert.Equal(1e9, fit.MinCompute);
        Assert.Equal(2e11, fit.MaxCompute);
    }

    [Fact]
    public void NoisyPointsRecoverTheLawWithinTheNoise()
    {
        const double a = 0.1, b = 0.03;
        var rng = new Random(5);
        var points = Enumerable.Range(0, 400).Select(i =>
        {
            double c = Math.Exp(18 + 8 * rng.NextDouble());
            return new ComputePoint(c, a + b * Math.Log(c) + 0.01 * (rng.NextDouble() - 0.5) * 2);
        }).ToList();
        var fit = LogLinearFit.Fit(points);
        Assert.InRange(fit.B, b - 0.001, b + 0.001);
        Assert.InRange(fit.A, a - 0.03, a + 0.03);
        Assert.InRange(fit.RSquared, 0.97, 1.0);
    }

    [Fact]
    public void ResidualsLowerRSquaredExactlyAsDefined()
    {
        // x = ln C ∈ {0, 1, 2}; y = {0, 2, 1}: slope 0.5, intercept 0.5, SS_res = 1.5, SS_tot = 2 → R² = 0.25.
        var points = new[] { new ComputePoint(1, 0), new ComputePoint(Math.E, 2), new ComputePoint(Math.E * Math.E, 1) };
        var fit = LogLinearFit.Fit(points);
        Assert.Equal(0.5, fit.B, 12);
        Assert.Equal(0.5, fit.A, 12);
        Assert.Equal(0.25, fit.RSquared, 12);
    }

    [Fact]
    public void FlatAccuracyHasZeroSlopeAndUndefinedRSquared()
    {
        var fit = LogLinearFit.Fit([new ComputePoint(1e6, 0.4), new ComputePoint(1e8, 0.4)]);
        Assert.Equal(0, fit.B, 12);
        Assert.True(double.IsNaN(fit.RSquared));
    }

    [Fact]
    public void DegenerateInputIsRefusedWithTheReason()
    {
        Assert.Contains("at least 2", Assert.Throws<ArgumentException>(() => LogLinearFit.Fit([new ComputePoint(1e9, 0.5)])).Message);
        Assert.Contains("same compute", Assert.Throws<ArgumentException>(() => LogLinearFit.Fit([new ComputePoint(1e9, 0.5), new ComputePoint(1e9, 0.6)])).Message);
        Assert.Contains("positive", Assert.Throws<ArgumentException>(() => LogLinearFit.Fit([new ComputePoint(0, 0.5), new ComputePoint(1e9, 0.6)])).Message);
        Assert.Contains("finite", Assert.Throws<ArgumentException>(() => LogLinearFit.Fit([new ComputePoint(1, double.NaN), new ComputePoint(1e9, 0.6)])).Message);
    }
}

public sealed class SweepSubsamplingTests
{
    private static GradedCandidate C(double score, string? answer, bool correct, int tokens = 10, int steps = 2) => new(score, answer, correct, tokens, steps);

    private static readonly ComputeModel Compute = new(PolicyParameters: 1000, HeadHiddenSize: 4);

    private static SweepPoint Point(IReadOnlyList<SweepPoint> points, int k, SweepMethod method, int? budget = 64) =>
        points.Single(p => p.K == k && p.Method == method && p.Budget == budget);

    [Fact]
    public void MajorityVoteTieGoesToTheAnswerSeenFirst()
    {
        // Answers 7 (wrong) and 5 (right) twice each: the tie goes to 7, the answer of the earliest candidate.
        var group = new[] { C(0.1, "7", false), C(0.9, "5", true), C(0.2, "7", false), C(0.8, "5", true) };
        var outcome = GroupOutcome.Of(group);
        Assert.Equal(0, outcome.MajorityVote);
        Assert.Equal(1, outcome.SprmBestOfN);      // 0.9 is the top score
        Assert.Equal(1, outcome.SprmWeightedVote); // 5 carries 1.7 against 0.3
        Assert.Equal(0.5, outcome.RandomPick);
        Assert.Equal(1, outcome.OraclePassAtK);
        Assert.Equal(40, outcome.ThinkingTokens);
        Assert.Equal(8, outcome.Steps);
    }

    [Fact]
    public void BestOfNTieGoesToTheFirstIndexAndAnswerlessCandidatesDoNotVote()
    {
        var group = new[] { C(0.5, null, false), C(0.5, "3", true), C(0.4, "3", true) };
        var outcome = GroupOutcome.Of(group);
        Assert.Equal(0, outcome.SprmBestOfN);  // equal scores: index 0 wins, and it has no answer
        Assert.Equal(1, outcome.MajorityVote); // the answerless one has no vote
    }

    [Fact]
    public void DisjointGroupsAverageOverTheCandidatesInGenerationOrderForSeedZero()
    {
        // 4 candidates; k = 2 → groups {0,1} and {2,3}. Best-of-N: group 1 picks the right one (0.9), group 2 the wrong one (0.8).
        var samples = new[] { new SweepSamples(0, 64, [C(0.9, "1", true), C(0.1, "2", false), C(0.8, "2", false), C(0.3, "1", true)]) };
        var points = SweepAnalysis.Points(samples, [1, 2, 4], seeds: 1, Compute);
        Assert.Equal(0.5, Point(points, 2, SweepMethod.SprmBestOfN).Accuracy);
        Assert.Equal(0.5, Point(points, 1, SweepMethod.SprmBestOfN).Accuracy); // k = 1 is pass@1
        Assert.Equal(1.0, Point(points, 2, SweepMethod.OraclePassAtK).Accuracy);
        Assert.Equal(1.0, Point(points, 4, SweepMethod.SprmBestOfN).Accuracy);
        Assert.Equal(20, Point(points, 2, SweepMethod.SprmBestOfN).MeanThinkingTokens); // summed over the k candidates
        Assert.Equal(4, Point(points, 2, SweepMethod.SprmBestOfN).MeanSteps);
        // C = 2·N·T + H·S with H = 2·(4·8 + 8) = 80.
        Assert.Equal(2.0 * 1000 * 20 + 80 * 4, Point(points, 2, SweepMethod.SprmBestOfN).Compute);
        Assert.Equal(80, Compute.HeadFlopsPerStep);
        Assert.All(points, p => Assert.Equal(0, p.SeedStdDev));
    }

    [Fact]
    public void KLargerThanTheCandidatesUsesAllOfThemAndCountsTheProblemAsShort()
    {
        var samples = new[]
        {
            new SweepSamples(0, null, [C(0.2, "1", false), C(0.7, "2", true)]),
            new SweepSamples(1, null, [C(0.6, "4", false), C(0.1, "9", true), C(0.5, "4", false), C(0.3, "9", true), C(0.2, "9", true), C(0.9, "4", false), C(0.1, "9", true), C(0.1, "9", true)]),
        };
        var points = SweepAnalysis.Points(samples, [8], seeds: 1, Compute); // generation order: the tie-break below depends on it
        var bon = Point(points, 8, SweepMethod.SprmBestOfN, budget: null);
        Assert.Equal(1, bon.ProblemsShort);
        Assert.Equal(2, bon.Problems);
        Assert.Equal(0.5, bon.Accuracy);          // problem 0 right (0.7), problem 1 wrong (0.9)
        Assert.Equal(0.5, Point(points, 8, SweepMethod.MajorityVote, budget: null).Accuracy); // problem 0: tie → earliest (wrong); problem 1: 9 wins 5–3
        Assert.Equal((2 * 10 + 8 * 10) / 2.0, bon.MeanThinkingTokens);
    }

    [Fact]
    public void SeedsDrawDifferentGroupsAndReportTheirSpread()
    {
        // Right answers first: generation-order groups of 2 are {right,right},{wrong,wrong}; shuffles mix them.
        var candidates = Enumerable.Range(0, 8).Select(i => C(i < 4 ? 0.2 : 0.9, i < 4 ? "1" : "2", i < 4)).ToList();
        var samples = Enumerable.Range(0, 10).Select(p => new SweepSamples(p, 64, candidates)).ToList();
        var one = Point(SweepAnalysis.Points(samples, [2], seeds: 1, Compute), 2, SweepMethod.OraclePassAtK);
        var many = Point(SweepAnalysis.Points(samples, [2], seeds: 20, Compute), 2, SweepMethod.OraclePassAtK);
        Assert.Equal(0.5, one.Accuracy);         // 2 of 4 groups hold a right answer
        Assert.True(many.Accuracy > 0.5, $"random groups mix right and wrong answers, oracle pass@2 rises (got {many.Accuracy})");
        Assert.True(many.SeedStdDev > 0);
        Assert.Equal(20, many.Seeds);
        // Random pick does not depend on grouping.
        Assert.Equal(0.5, Point(SweepAnalysis.Points(samples, [2], seeds: 20, Compute), 2, SweepMethod.RandomPick).Accuracy, 12);
    }

    [Fact]
    public void AnalyseFitsEachMethodOverEveryBudgetAndK()
    {
        // Accuracy rises with budget (more thinking) at every k: the slope over all points must be positive.
        var rng = new Random(3);
        var samples = new List<SweepSamples>();
        foreach (int budget in new[] { 16, 64 })
            for (int p = 0; p < 30; p++)
                samples.Add(new SweepSamples(p, budget, Enumerable.Range(0, 8).Select(_ =>
                {
                    bool right = rng.NextDouble() < (budget == 16 ? 0.05 : 0.4);
                    return C(right ? 0.6 + 0.4 * rng.NextDouble() : 0.7 * rng.NextDouble(), right ? "ok" : rng.Next(5).ToString(), right, budget, budget / 8);
                }).ToList()));
        var report = SweepAnalysis.Analyse(samples, [1, 2, 4, 8], seeds: 3, Compute);
        Assert.Equal(2 * 4 * SweepAnalysis.Methods.Length, report.Points.Count);
        var bon = report.Fits.Single(f => f.Method == SweepMethod.SprmBestOfN).Fit;
        Assert.True(bon.B > 0, $"b = {bon.B}");
        Assert.Equal(8, bon.Points);
        Assert.InRange(bon.RSquared, 0, 1);
        Assert.Equal(2 * SweepAnalysis.Methods.Length, report.FitsByBudget.Count);
        Assert.Contains("1,000 policy parameters", report.ComputeDefinition);
    }

    [Fact]
    public void SubsamplingIsTheSameInEveryProcess()
    {
        // Seeded shuffles must not depend on per-process hash randomisation: these values were computed once and must not move.
        var samples = new SweepSamples(3, 64, Enumerable.Range(0, 6).Select(i => C(i / 10.0, i.ToString(), i % 2 == 0)).ToList());
        Assert.Equal(samples.Candidates, SweepAnalysis.Order(samples, 0));
        var order = SweepAnalysis.Order(samples, 1).Select(c => c.Answer).ToArray();
        Assert.Equal(order, SweepAnalysis.Order(samples, 1).Select(c => c.Answer).ToArray());
        Assert.Equal("2,3,5,4,1,0", string.Join(",", order));
    }

    [Fact]
    public void BadArgumentsAreRefused()
    {
        var samples = new[] { new SweepSamples(0, 1, [C(0.5, "1", true)]) };
        Assert.Throws<ArgumentException>(() => SweepAnalysis.Points(samples, [], 1, Compute));
        Assert.Throws<ArgumentOutOfRangeException>(() => SweepAnalysis.Points(samples, [0], 1, Compute));
        Assert.Throws<ArgumentOutOfRangeException>(() => SweepAnalysis.Points(samples, [1], 0, Compute));
    }
}
