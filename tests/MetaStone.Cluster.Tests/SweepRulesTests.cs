using MetaStone.Contracts;
using MetaStone.Grains.Sweeps;

namespace MetaStone.Cluster.Tests;

public sealed class SweepRulesTests
{
    private static readonly SweepRequest Valid = new()
    {
        Problems = [new SweepProblem("1 + 1", "2"), new SweepProblem("2 * 3", "6")], Ks = [1, 4], Budgets = [32, null],
    };

    [Theory]
    [InlineData("no problems", "the sweep has no problems")]
    [InlineData("empty answer", "problem 1 has an empty answer")]
    [InlineData("k 0", "k = 0 is out of range (1–256)")]
    [InlineData("k 257", "k = 257 is out of range (1–256)")]
    [InlineData("k repeat", "k values repeat: 4,4")]
    [InlineData("no budgets", "no thinking budgets")]
    [InlineData("negative budget", "thinking budget -5 is negative")]
    [InlineData("budget repeat", "thinking budgets repeat: none,none")]
    [InlineData("seeds", "subsampling seeds must be 1–1000 (got 0)")]
    [InlineData("top-p", "top-p must be in (0, 1] (got 1.5)")]
    [InlineData("infinite temperature", "temperature must be a finite number ≥ 0")]
    [InlineData("fixed budget", "a sweep's budgets are its list of budgets")]
    public void BadRequestsNameTheProblem(string what, string message)
    {
        var bad = what switch
        {
            "no problems" => Valid with { Problems = [] },
            "empty answer" => Valid with { Problems = [Valid.Problems[0], new SweepProblem("3 - 1", " ")] },
            "k 0" => Valid with { Ks = [0, 1] },
            "k 257" => Valid with { Ks = [257] },
            "k repeat" => Valid with { Ks = [4, 4] },
            "no budgets" => Valid with { Budgets = [] },
            "negative budget" => Valid with { Budgets = [-5] },
            "budget repeat" => Valid with { Budgets = [null, null] },
            "seeds" => Valid with { SubsampleSeeds = 0 },
            "top-p" => Valid with { Sampling = new() { TopP = 1.5 } },
            "infinite temperature" => Valid with { Sampling = new() { Temperature = double.PositiveInfinity } },
            "fixed budget" => Valid with { Sampling = new() { ThinkingBudget = 64 } },
            _ => throw new ArgumentOutOfRangeException(nameof(what)),
        };
        Assert.Contains(message, Assert.Throws<ArgumentException>(() => SweepRules.Validate(bad)).Message);
    }

    [Fact]
    public void ItemsMapToStableJobsWithSeedsSharedAcrossBudgets()
    {
        SweepRules.Validate(Valid);
        Assert.Equal(4, Valid.ItemCount);
        Assert.Equal((1, 1), SweepRules.ItemOf(Valid, 3));
        Assert.Equal("sw/p1/bnone", SweepRules.JobId("sw", Valid, 3));
        Assert.Equal("sw/p0/b32", SweepRules.JobId("sw", Valid, 0));
        var job = SweepRules.JobOf(Valid, 3);
        Assert.Equal(4, job.K);
        Assert.Null(job.Sampling.ThinkingBudget);
        Assert.Equal(32, SweepRules.JobOf(Valid, 0).Sampling.ThinkingBudget);
        Assert.Equal(Valid.Sampling with { ThinkingBudget = 32 }, SweepRules.JobOf(Valid, 0).Sampling);
        Assert.Equal(Valid.Seed + 1000, job.Seed);
        Assert.Equal(job.Seed, SweepRules.JobOf(Valid, 2).Seed); // same problem, other budget: same seeds
    }

    [Fact]
    public void SameSweepIgnoresDescriptionAndConcurrencyOnly()
    {
        Assert.True(SweepRules.SameSweep(Valid, Valid with { Description = "again", MaxConcurrentItems = 7 }));
        Assert.False(SweepRules.SameSweep(Valid, Valid with { Seed = 99 }));
        Assert.False(SweepRules.SameSweep(Valid, Valid with { Budgets = [32] }));
    }

    [Theory]
    [InlineData(64, 32, 3)]
    [InlineData(8, 32, 2)]
    [InlineData(256, 8, 48)]
    public void AutoConcurrencyFillsTheSlotsOneAndAHalfTimes(int slots, int k, int expected) =>
        Assert.Equal(expected, SweepRules.AutoConcurrency(slots, k));
}
