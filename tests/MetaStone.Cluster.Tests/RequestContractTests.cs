using System.Text.Json;
using MetaStone.Cli;
using MetaStone.Contracts;
using MetaStone.Grains.Durability;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Serialization;

namespace MetaStone.Cluster.Tests;

/// <summary>
/// The request contract's choices (effort, selection, finish reason): one spelling each in text and in every JSON the
/// system writes (CLI --json, persisted records, the gateway's default options), one parser for what users type, and
/// Orleans' serializer carries them.
/// </summary>
public sealed class RequestContractTests
{
    public static TheoryData<object, string> Spellings() => new()
    {
        { ReasoningEffort.Low, "low" }, { ReasoningEffort.Medium, "medium" }, { ReasoningEffort.High, "high" },
        { WinnerSelection.BestOfN, "bon" }, { WinnerSelection.Majority, "majority" }, { WinnerSelection.Weighted, "weighted" },
        { CandidateFinishReason.Stop, "stop" }, { CandidateFinishReason.Length, "length" }, { CandidateFinishReason.Cancelled, "cancelled" },
    };

    /// <summary>Every option set the system writes JSON with: System.Text.Json's defaults (the gateway's SSE chunks, the
    /// sweep id's hash), ASP.NET's web defaults (Results.Json), the CLI's and the persisted records'.</summary>
    private static readonly (string Name, JsonSerializerOptions Options)[] JsonOptionSets =
    [
        ("default", JsonSerializerOptions.Default), ("web", JsonSerializerOptions.Web), ("cli", JsonOutput.SerializerOptions), ("persisted", JobJson.Options),
    ];

    [Theory]
    [MemberData(nameof(Spellings))]
    public void Each_choice_has_one_spelling_in_text_and_in_every_json(object value, string spelling)
    {
        string name = value switch
        {
            ReasoningEffort e => e.Name(),
            WinnerSelection s => s.Name(),
            CandidateFinishReason f => f.Name(),
            _ => throw new ArgumentOutOfRangeException(nameof(value)),
        };
        Assert.Equal(spelling, name);
        foreach (var (set, options) in JsonOptionSets)
        {
            Assert.True(JsonSerializer.Serialize(value, value.GetType(), options) == $"\"{spelling}\"", $"{set}: {JsonSerializer.Serialize(value, value.GetType(), options)}");
            Assert.Equal(value, JsonSerializer.Deserialize($"\"{spelling}\"", value.GetType(), options));
        }
    }

    [Theory]
    [MemberData(nameof(Spellings))]
    public void Parsing_a_spelling_gives_its_value_back_in_any_case(object value, string spelling)
    {
        foreach (string text in new[] { spelling, spelling.ToUpperInvariant(), $" {spelling} " })
        {
            object parsed = value switch
            {
                ReasoningEffort => RequestText.ParseEffort(text),
                WinnerSelection => RequestText.ParseSelection(text),
                CandidateFinishReason => RequestText.ParseFinishReason(text),
                _ => throw new ArgumentOutOfRangeException(nameof(value)),
            };
            Assert.Equal(value, parsed);
        }
    }

    [Theory]
    [InlineData("best-of-n", WinnerSelection.BestOfN)]
    [InlineData("sprm", WinnerSelection.BestOfN)]
    [InlineData("sprm-best-of-n", WinnerSelection.BestOfN)]
    [InlineData("vote", WinnerSelection.Majority)]
    [InlineData("majority-vote", WinnerSelection.Majority)]
    [InlineData("weighted-vote", WinnerSelection.Weighted)]
    [InlineData("SPRM-Weighted-Vote", WinnerSelection.Weighted)]
    public void The_older_selection_names_still_parse(string text, WinnerSelection selection) =>
        Assert.Equal(selection, RequestText.ParseSelection(text));

    [Fact]
    public void Unknown_words_are_refused_with_the_valid_ones()
    {
        Assert.Equal("unknown effort 'extreme' (valid: low, medium, high)", Assert.Throws<ArgumentException>(() => RequestText.ParseEffort("extreme")).Message);
        Assert.Equal("unknown selection method 'best' (valid: bon, majority, weighted)", Assert.Throws<ArgumentException>(() => RequestText.ParseSelection("best")).Message);
        Assert.Equal("unknown finish reason 'eos' (valid: stop, length, cancelled)", Assert.Throws<ArgumentException>(() => RequestText.ParseFinishReason("eos")).Message);
        // Numbers are values of the enum to .NET's Enum.Parse, but not words a user may type.
        Assert.Throws<ArgumentException>(() => RequestText.ParseEffort("1"));
        Assert.Throws<ArgumentException>(() => RequestText.ParseSelection(""));
    }

    private static JobResult SampleResult() => new()
    {
        JobId = "j1",
        Request = new JobRequest
        {
            Prompt = "Compute 1 + 2.", Effort = ReasoningEffort.High, Selection = WinnerSelection.Weighted, Seed = 3,
            Sampling = new SamplingSettings { MaxNewTokens = 64, ThinkingBudget = 16, Temperature = 0.9, TopP = 0.5, RepetitionPenalty = 1.2 },
        },
        K = 2,
        Selection = WinnerSelection.Weighted,
        WinnerIndex = 1,
        Candidates =
        [
            new CandidateResult { Index = 0, Seed = 3, Text = "a", PromptTokens = 4, ResponseTokens = 64, ThinkingTokens = 16, AnswerTokens = 48, StepScores = [0.5], Score = 0.5, FinishReason = CandidateFinishReason.Length, Replica = "s/cpu" },
            new CandidateResult { Index = 1, Seed = 4, Text = "b", Answer = "3", PromptTokens = 4, ResponseTokens = 9, ThinkingTokens = 5, AnswerTokens = 4, StepScores = [0.9, 0.8], Score = 0.85, FinishReason = CandidateFinishReason.Stop, Replica = "s/cpu" },
        ],
        ElapsedSeconds = 1.5,
    };

    [Fact]
    public void A_result_prints_and_persists_its_choices_as_words()
    {
        foreach (var options in new[] { JsonOutput.SerializerOptions, JobJson.Options })
        {
            using var json = JsonDocument.Parse(JsonSerializer.Serialize(SampleResult(), options));
            var root = json.RootElement;
            Assert.Equal("weighted", root.GetProperty("selection").GetString());
            Assert.Equal("high", root.GetProperty("request").GetProperty("effort").GetString());
            Assert.Equal("weighted", root.GetProperty("request").GetProperty("selection").GetString());
            Assert.Equal(16, root.GetProperty("request").GetProperty("sampling").GetProperty("thinkingBudget").GetInt32());
            Assert.Equal(["length", "stop"], root.GetProperty("candidates").EnumerateArray().Select(c => c.GetProperty("finishReason").GetString()));
        }
        // A job without an effort (explicit k) writes null, as the string field did.
        using var noEffort = JsonDocument.Parse(JobJson.Write(new JobRequest { Prompt = "p", K = 4 }));
        Assert.Equal(JsonValueKind.Null, noEffort.RootElement.GetProperty("effort").ValueKind);
    }

    [Fact]
    public void A_job_record_persisted_before_the_sampling_record_keeps_its_own_sampling()
    {
        // The shape a job record had in Redis before SamplingSettings: sampling fields flat in the request, choices as words.
        const string stored = """
            {"request":{"prompt":"2+2?","effort":"high","k":null,"thinkingBudget":64,"maxNewTokens":300,"temperature":0.3,
             "topP":0.9,"repetitionPenalty":1.2,"selection":"majority","seed":7},"k":32,"state":"running","runs":1}
            """;
        var request = JobJson.Read<JobRecord>(stored).Request!;
        Assert.Equal(new SamplingSettings { ThinkingBudget = 64, MaxNewTokens = 300, Temperature = 0.3, TopP = 0.9, RepetitionPenalty = 1.2 }, request.Sampling);
        Assert.Equal((ReasoningEffort?)ReasoningEffort.High, request.Effort);
        Assert.Equal(WinnerSelection.Majority, request.Selection);
        Assert.Equal(7, request.Seed);
        // Written back, it takes today's shape: one nested sampling object, nothing flat.
        using var rewritten = JsonDocument.Parse(JobJson.Write(request));
        Assert.Equal(300, rewritten.RootElement.GetProperty("sampling").GetProperty("maxNewTokens").GetInt32());
        Assert.False(rewritten.RootElement.TryGetProperty("maxNewTokens", out _));
    }

    [Fact]
    public void A_persisted_record_reads_back_equal()
    {
        var result = SampleResult();
        var record = new JobRecord { Request = result.Request, K = 2, State = JobState.Completed, Runs = 1, Result = result };
        var read = JobJson.Read<JobRecord>(JobJson.Write(record));
        Assert.Equal(result.Request, read.Request);
        Assert.Equal(result.Selection, read.Result!.Selection);
        Assert.Equal(result.Candidates.Select(c => c.FinishReason), read.Result.Candidates.Select(c => c.FinishReason));

        var item = new SweepItemResult { Item = 0, Problem = 0, JobId = "s/p0/b8", Candidates = [new SweepCandidate(0.5, "3", true, 5, 2, CandidateFinishReason.Length)] };
        string line = JsonSerializer.Serialize(item, JsonOutput.SerializerOptions);
        Assert.Contains("\"finishReason\": \"length\"", line);
        Assert.Equal(CandidateFinishReason.Length, JsonSerializer.Deserialize<SweepItemResult>(line, JsonOutput.SerializerOptions)!.Candidates[0].FinishReason);
    }

    [Fact]
    public void Orleans_carries_the_request_and_the_result_between_silos()
    {
        using var services = new ServiceCollection().AddSerializer(s => s.AddAssembly(typeof(JobRequest).Assembly)).BuildServiceProvider();
        var serializer = services.GetRequiredService<Serializer>();
        var result = SampleResult();
        var copy = serializer.Deserialize<JobResult>(serializer.SerializeToArray(result))!;
        Assert.Equal(result.Request, copy.Request);
        Assert.Equal(result.Selection, copy.Selection);
        Assert.Equal(result.Candidates.Select(c => (c.Index, c.FinishReason)), copy.Candidates.Select(c => (c.Index, c.FinishReason)));
        var sweep = new SweepRequest { Problems = [new SweepProblem("p", "1")], Ks = [1, 2], Budgets = [8, null], Sampling = new() { TopP = 0.7 } };
        Assert.Equal(0.7, serializer.Deserialize<SweepRequest>(serializer.SerializeToArray(sweep))!.Sampling.TopP);
    }
}
