using MetaStone.Contracts;
using MetaStone.Grains.Jobs;
using MetaStone.Reasoning;

namespace MetaStone.Cluster.Tests;

/// <summary>The one request validator (jobs, sweeps through their jobs, the CLI before it starts anything), without a cluster.</summary>
public sealed class JobRequestRulesTests
{
    private static readonly JobRequest Valid = new() { Prompt = "Reach 81 with 5, 16, 13 using + - * /, each number at most once." };

    [Theory]
    [InlineData(null, null, 8)]
    [InlineData("low", null, 2)]
    [InlineData("medium", null, 8)]
    [InlineData("high", null, 32)]
    [InlineData("high", 5, 5)]
    [InlineData(null, 256, 256)]
    public void Effort_gives_k_and_an_explicit_k_overrides_it(string? effort, int? k, int expected) =>
        Assert.Equal(expected, JobRequestRules.Validate(Valid with { Effort = effort, K = k }).K);

    [Theory]
    [InlineData("bon", SelectionMethod.SprmBestOfN)]
    [InlineData("majority", SelectionMethod.MajorityVote)]
    [InlineData("weighted", SelectionMethod.SprmWeightedVote)]
    public void Selection_names_parse(string name, SelectionMethod method) =>
        Assert.Equal(method, JobRequestRules.Validate(Valid with { Selection = name }).Selection);

    [Theory]
    [InlineData("empty prompt", "the prompt is empty")]
    [InlineData("k 0", "k = 0 is out of range")]
    [InlineData("k 257", "k = 257 is out of range")]
    [InlineData("effort", "unknown effort 'extreme' (valid: low, medium, high)")]
    [InlineData("max new tokens", "max new tokens must be at least 1")]
    [InlineData("budget", "the thinking budget must be ≥ 0 tokens")]
    [InlineData("temperature NaN", "temperature must be a finite number ≥ 0")]
    [InlineData("temperature ∞", "temperature must be a finite number ≥ 0")]
    [InlineData("temperature < 0", "temperature must be a finite number ≥ 0")]
    [InlineData("top-p 0", "top-p must be in (0, 1]")]
    [InlineData("top-p 1.5", "top-p must be in (0, 1]")]
    [InlineData("repetition penalty", "repetition penalty must be > 0")]
    public void Bad_requests_name_the_problem(string what, string message)
    {
        var bad = what switch
        {
            "empty prompt" => Valid with { Prompt = "  " },
            "k 0" => Valid with { K = 0 },
            "k 257" => Valid with { K = 257 },
            "effort" => Valid with { Effort = "extreme" },
            "max new tokens" => Valid with { MaxNewTokens = 0 },
            "budget" => Valid with { ThinkingBudget = -1 },
            "temperature NaN" => Valid with { Temperature = double.NaN },
            "temperature ∞" => Valid with { Temperature = double.PositiveInfinity },
            "temperature < 0" => Valid with { Temperature = -0.1 },
            "top-p 0" => Valid with { TopP = 0 },
            "top-p 1.5" => Valid with { TopP = 1.5 },
            "repetition penalty" => Valid with { RepetitionPenalty = 0 },
            _ => throw new ArgumentOutOfRangeException(nameof(what)),
        };
        Assert.Contains(message, Assert.Throws<ArgumentException>(() => JobRequestRules.Validate(bad)).Message);
    }

    [Fact]
    public void An_unknown_selection_is_refused() =>
        Assert.ThrowsAny<ArgumentException>(() => JobRequestRules.Validate(Valid with { Selection = "best" }));

    [Fact]
    public void Jobs_and_sweeps_share_one_set_of_defaults()
    {
        var job = new JobRequest { Prompt = "p" };
        var sweep = new SweepRequest { Problems = [new SweepProblem("p", "1")], Ks = [1], Budgets = [null] };
        Assert.Equal((job.MaxNewTokens, job.Temperature, job.TopP, job.RepetitionPenalty), (sweep.MaxNewTokens, sweep.Temperature, sweep.TopP, sweep.RepetitionPenalty));
        Assert.Equal(SamplingDefaults.MaxNewTokens, job.MaxNewTokens);
    }
}
