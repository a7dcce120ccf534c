using MetaStone.Contracts;
using MetaStone.Grains.Jobs;
using MetaStone.Model.Generation;
using MetaStone.Reasoning;

namespace MetaStone.Cluster.Tests;

/// <summary>The one request validator (jobs, sweeps through their jobs, the CLI before it starts anything), without a cluster.</summary>
public sealed class JobRequestRulesTests
{
    private static readonly JobRequest Valid = new() { Prompt = "Reach 81 with 5, 16, 13 using + - * /, each number at most once." };

    [Theory]
    [InlineData(null, null, 8)]
    [InlineData(ReasoningEffort.Low, null, 2)]
    [InlineData(ReasoningEffort.Medium, null, 8)]
    [InlineData(ReasoningEffort.High, null, 32)]
    [InlineData(ReasoningEffort.High, 5, 5)]
    [InlineData(null, 256, 256)]
    public void Effort_gives_k_and_an_explicit_k_overrides_it(ReasoningEffort? effort, int? k, int expected) =>
        Assert.Equal(expected, JobRequestRules.Validate(Valid with { Effort = effort, K = k }).K);

    [Theory]
    [InlineData("bon", SelectionMethod.SprmBestOfN)]
    [InlineData("majority", SelectionMethod.MajorityVote)]
    [InlineData("weighted", SelectionMethod.SprmWeightedVote)]
    public void Selection_names_parse_to_the_reasoning_librarys_methods(string name, SelectionMethod method) =>
        Assert.Equal(method, JobRequestRules.Validate(Valid with { Selection = RequestText.ParseSelection(name) }).Selection);

    [Theory]
    [InlineData("empty prompt", "the prompt is empty")]
    [InlineData("k 0", "k = 0 is out of range")]
    [InlineData("k 257", "k = 257 is out of range")]
    [InlineData("effort", "unknown effort '7' (valid: low, medium, high)")]
    [InlineData("selection", "unknown selection method '9' (valid: bon, majority, weighted)")]
    [InlineData("no sampling", "the sampling settings are missing")]
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
            "effort" => Valid with { Effort = (ReasoningEffort)7 },
            "selection" => Valid with { Selection = (WinnerSelection)9 },
            "no sampling" => Valid with { Sampling = null! },
            "max new tokens" => Valid with { Sampling = new() { MaxNewTokens = 0 } },
            "budget" => Valid with { Sampling = new() { ThinkingBudget = -1 } },
            "temperature NaN" => Valid with { Sampling = new() { Temperature = double.NaN } },
            "temperature ∞" => Valid with { Sampling = new() { Temperature = double.PositiveInfinity } },
            "temperature < 0" => Valid with { Sampling = new() { Temperature = -0.1 } },
            "top-p 0" => Valid with { Sampling = new() { TopP = 0 } },
            "top-p 1.5" => Valid with { Sampling = new() { TopP = 1.5 } },
            "repetition penalty" => Valid with { Sampling = new() { RepetitionPenalty = 0 } },
            _ => throw new ArgumentOutOfRangeException(nameof(what)),
        };
        Assert.Contains(message, Assert.Throws<ArgumentException>(() => JobRequestRules.Validate(bad)).Message);
    }

    [Fact]
    public void The_edges_of_the_sampling_record_are_accepted()
    {
        JobRequestRules.ValidateSampling(new SamplingSettings { MaxNewTokens = 1, ThinkingBudget = 0, Temperature = 0, TopP = 1, RepetitionPenalty = 1e-3 });
        Assert.Equal(SelectionMethod.SprmBestOfN, JobRequestRules.Validate(Valid).Selection);
    }

    [Fact]
    public void Jobs_sweeps_and_the_model_library_share_one_set_of_defaults()
    {
        var job = new JobRequest { Prompt = "p" };
        var sweep = new SweepRequest { Problems = [new SweepProblem("p", "1")], Ks = [1], Budgets = [null] };
        Assert.Equal(job.Sampling, sweep.Sampling);
        Assert.Equal(new SamplingSettings
        {
            MaxNewTokens = SamplingDefaults.MaxNewTokens, Temperature = SamplingDefaults.Temperature, TopP = SamplingDefaults.TopP,
            RepetitionPenalty = SamplingDefaults.RepetitionPenalty, ThinkingBudget = null,
        }, job.Sampling);
        // The model library cannot see the contract, so it states the same defaults itself: they must agree.
        Assert.Equal(new SamplingOptions(), ModelMapping.ToSamplingOptions(job.Sampling));
    }

    [Fact]
    public void The_one_mapping_carries_every_sampling_field_to_the_model_library()
    {
        var sampling = new SamplingSettings { MaxNewTokens = 77, ThinkingBudget = 33, Temperature = 0.9, TopP = 0.5, RepetitionPenalty = 1.2 };
        Assert.Equal(new SamplingOptions { MaxNewTokens = 77, ThinkingBudget = 33, Temperature = 0.9, TopP = 0.5, RepetitionPenalty = 1.2 },
            ModelMapping.ToSamplingOptions(sampling));
    }

    [Theory]
    [InlineData(FinishReason.Stop, CandidateFinishReason.Stop)]
    [InlineData(FinishReason.Length, CandidateFinishReason.Length)]
    [InlineData(FinishReason.Cancelled, CandidateFinishReason.Cancelled)]
    public void Finish_reasons_map_one_to_one(FinishReason engine, CandidateFinishReason contract) =>
        Assert.Equal(contract, ModelMapping.ToFinishReason(engine));

    [Fact]
    public void Selections_map_both_ways()
    {
        foreach (var selection in Enum.GetValues<WinnerSelection>())
            Assert.Equal(selection, ModelMapping.ToWinnerSelection(ModelMapping.ToSelectionMethod(selection)));
        Assert.Equal(Enum.GetValues<SelectionMethod>().Length, Enum.GetValues<WinnerSelection>().Length);
    }
}
