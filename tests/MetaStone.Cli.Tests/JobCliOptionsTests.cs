using System.CommandLine;
using MetaStone.Cli.Cluster;
using MetaStone.Contracts;

namespace MetaStone.Cli.Tests;

/// <summary>ask, submit, generate and sweep read the request through one option set: the same words give the same request.</summary>
public sealed class JobCliOptionsTests
{
    private const string Question = "Compute 3 + 4 * 2 from left to right.";

    private static JobRequest RequestOf(string verb, params string[] options)
    {
        var parse = CliRootCommand.Create().Parse([verb, Question, .. options]);
        Assert.Empty(parse.Errors);
        return JobCliOptions.Of(parse.CommandResult.Command).Request(parse);
    }

    public static TheoryData<string> JobVerbs() => new() { "ask", "submit", "generate" };

    [Theory]
    [MemberData(nameof(JobVerbs))]
    public void Every_option_lands_in_the_request(string verb)
    {
        var request = RequestOf(verb, "--effort", "high", "--budget", "16", "--max-new-tokens", "64", "--temperature", "0.9", "--top-p", "0.5",
            "--repetition-penalty", "1.2", "--selection", "majority", "--seed", "7");
        Assert.Equal(new JobRequest
        {
            Prompt = Question, Effort = ReasoningEffort.High, Selection = WinnerSelection.Majority, Seed = 7,
            Sampling = new SamplingSettings { MaxNewTokens = 64, ThinkingBudget = 16, Temperature = 0.9, TopP = 0.5, RepetitionPenalty = 1.2 },
        }, request);
    }

    [Theory]
    [MemberData(nameof(JobVerbs))]
    public void Without_options_every_verb_asks_for_the_same_defaults(string verb) =>
        Assert.Equal(new JobRequest { Prompt = Question }, RequestOf(verb));

    [Theory]
    [MemberData(nameof(JobVerbs))]
    public void The_old_spellings_are_aliases(string verb) =>
        Assert.Equal(RequestOf(verb, "--k", "4", "--budget", "16", "--selection", "weighted"),
            RequestOf(verb, "--n", "4", "--thinking-budget", "16", "--select", "weighted"));

    [Fact]
    public void Sweep_reads_the_same_sampling_options()
    {
        string[] sampling = ["--max-new-tokens", "64", "--temperature", "0.9", "--top-p", "0.5", "--repetition-penalty", "1.2"];
        var parse = CliRootCommand.Create().Parse(["sweep", .. sampling]);
        Assert.Empty(parse.Errors);
        var sweep = SamplingCliOptions.Of(parse.CommandResult.Command).Settings(parse);
        Assert.Equal(RequestOf("ask", sampling).Sampling, sweep);

        var defaults = CliRootCommand.Create().Parse(["sweep"]);
        Assert.Equal(new SamplingSettings(), SamplingCliOptions.Of(defaults.CommandResult.Command).Settings(defaults));
    }

    [Theory]
    [InlineData("--effort", "extreme", "unknown effort 'extreme' (valid: low, medium, high)")]
    [InlineData("--select", "best", "unknown selection method 'best' (valid: bon, majority, weighted)")]
    [InlineData("--k", "0", "k = 0 is out of range")]
    [InlineData("--top-p", "1.5", "top-p must be in (0, 1]")]
    public void Bad_words_and_values_are_named_by_every_job_verb(string option, string value, string message)
    {
        foreach (var verb in new[] { "ask", "submit", "generate" })
            Assert.Contains(message, Assert.Throws<ArgumentException>(() => RequestOf(verb, option, value)).Message);
    }

    [Fact]
    public async Task Generate_reports_a_bad_effort_before_it_looks_for_the_model()
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = await CliRootCommand.Create().Parse(["generate", Question, "--effort", "extreme", "--model", "/nonexistent/model"])
            .InvokeAsync(new InvocationConfiguration { Output = output, Error = error });
        Assert.Equal(2, code);
        Assert.Contains("metastone generate: unknown effort 'extreme' (valid: low, medium, high)", error.ToString());
    }
}
