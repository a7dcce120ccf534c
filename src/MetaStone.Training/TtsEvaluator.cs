using System.Diagnostics;
using MetaStone.Model;
using MetaStone.Model.Generation;
using MetaStone.Reasoning;
using MetaStone.Training.Tasks;

namespace MetaStone.Training;

/// <summary>The evaluation figures of one task family (or of a dataset that is neither family: "other").</summary>
public sealed record FamilyEval
{
    public required string Family { get; init; }
    public required int Problems { get; init; }
    /// <summary>Accuracy of a single sample (mean over all samples).</summary>
    public required double PassAt1 { get; init; }
    /// <summary>Trajectory score (geometric mean of step scores) separating correct from wrong trajectories.</summary>
    public required double SprmAuroc { get; init; }
    public required double MeanScoreCorrect { get; init; }
    public required double MeanScoreWrong { get; init; }
    public required double MeanThinkingTokens { get; init; }
    public required double FinishedFraction { get; init; }
    /// <summary>
    /// Share of problems where two or more candidates with different texts share the top score (within the selection's tie
    /// tolerance, 1e-6) among all
    /// of the problem's samples: there Best-of-N is decided by the tie-break (first index), not by the SPRM.
    /// </summary>
    public required double TiesAtTop { get; init; }
    public required IReadOnlyList<KAccuracy> ByK { get; init; }

    public IEnumerable<string> ToLines(int samplesPerProblem)
    {
        yield return $"family {Family}: {Problems} problems × {samplesPerProblem} samples";
        yield return $"pass@1 {PassAt1:P1}   SPRM AUROC {SprmAuroc:F3}   mean score correct {MeanScoreCorrect:F3} / wrong {MeanScoreWrong:F3}   ties at top {TiesAtTop:P1}   mean thinking tokens {MeanThinkingTokens:F1}   finished {FinishedFraction:P1}";
        yield return "";
        yield return "|  k | SPRM Best-of-N | majority vote | SPRM-weighted vote | random pick | oracle pass@k | groups |";
        yield return "|---:|---:|---:|---:|---:|---:|---:|";
        foreach (var r in ByK)
            yield return $"| {r.K,2} | {r.SprmBestOfN:P1} | {r.MajorityVote:P1} | {r.SprmWeightedVote:P1} | {r.RandomPick:P1} | {r.OraclePassAtK:P1} | {r.Groups} |";
    }
}

/// <summary>The evaluation of a model: per task family, pass@1, selection accuracy at each k, and how well the SPRM separates right from wrong.</summary>
public sealed record EvalReport
{
    public required string Model { get; init; }
    public required int SamplesPerProblem { get; init; }
    public required long Seed { get; init; }
    /// <summary>One entry per family present in the problems, in the order chain, search, other.</summary>
    public required IReadOnlyList<FamilyEval> Families { get; init; }
    public required double Seconds { get; init; }

    public FamilyEval? Family(string name) => Families.FirstOrDefault(f => f.Family == name);

    /// <summary>Every problem with its graded samples (generation order), for dumps; not part of the JSON report.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public IReadOnlyList<(TaskExample Problem, IReadOnlyList<TtsEvaluator.EvaluatedSample> Samples)> Samples { get; init; } = [];

    public string ToTable()
    {
        var lines = new List<string> { $"model {Model}: {Families.Sum(f => f.Problems)} problems × {SamplesPerProblem} samples (seed {Seed}), {Seconds:F0} s" };
        foreach (var family in Families)
        {
            lines.Add("");
            lines.AddRange(family.ToLines(SamplesPerProblem));
        }
        return string.Join('\n', lines);
    }
}

/// <summary>
/// Evaluates test-time scaling on held-out task problems: generates k_max candidates per problem once
/// (scored in flight by the engine), grades them, and estimates every k from disjoint groups.
/// </summary>
public static class TtsEvaluator
{
    public static async Task<EvalReport> EvaluateAsync(ReflectiveModel model, IReadOnlyList<TaskExample> problems, IReadOnlyList<int> ks,
        long seed, SamplingOptions? sampling = null, Action<int, int>? progress = null, CancellationToken cancellationToken = default)
    {
        if (problems.Count == 0) throw new ArgumentException("no problems to evaluate", nameof(problems));
        int kMax = ks.Max();
        var clock = Stopwatch.StartNew();
        int done = 0;
        var requests = problems.Select((problem, index) => new GenerationRequest
        {
            PromptIds = model.EncodePrompt(problem.Prompt),
            Seeds = Enumerable.Range(0, kMax).Select(i => seed + (long)index * 100_000 + i).ToArray(),
            Sampling = sampling ?? new SamplingOptions { MaxNewTokens = 256 },
        }).ToList();
        // All requests enter the engine in one go, so a fixed seed gives the same batches, and the same output, in every run.
        var running = model.Engine.GenerateMany(requests, cancellationToken);
        var graded = await Task.WhenAll(problems.Select(async (problem, index) =>
        {
            var trajectories = await running[index].ConfigureAwait(false);
            var result = trajectories.Select(t =>
            {
                var described = model.Describe(t);
                return new EvaluatedSample(new GradedCandidate(described.Score, described.Answer, AnswerGrader.IsCorrect(described.Text, problem.Answer), t.ThinkingTokens),
                    t.FinishReason == FinishReason.Stop, described.Text);
            }).ToList();
            progress?.Invoke(Interlocked.Increment(ref done), problems.Count);
            return result;
        })).ConfigureAwait(false);

        var families = problems.Select((p, i) => (Name: FamilyName(p.Prompt), Samples: graded[i]))
            .GroupBy(x => x.Name)
            .OrderBy(g => g.Key switch { "chain" => 0, "search" => 1, _ => 2 })
            .Select(g => Summarize(g.Key, g.Select(x => (IReadOnlyList<EvaluatedSample>)x.Samples).ToList(), ks))
            .ToList();
        return new EvalReport
        {
            Model = model.Directory, SamplesPerProblem = kMax, Seed = seed, Families = families, Seconds = clock.Elapsed.TotalSeconds,
            Samples = [.. problems.Select((p, i) => (p, (IReadOnlyList<EvaluatedSample>)graded[i]))],
        };
    }

    /// <summary>One graded sample with what the figures beyond selection need: whether it finished, and its text (for ties).</summary>
    public readonly record struct EvaluatedSample(GradedCandidate Candidate, bool Finished, string Text);

    /// <summary>"chain", "search", or "other" for a prompt that is neither task's.</summary>
    public static string FamilyName(string prompt) => TaskSuite.FamilyOfPrompt(prompt) is { } f ? TaskSuite.NameOf(f) : "other";

    /// <summary>The figures of one family from its problems' samples (each problem's samples in generation order).</summary>
    public static FamilyEval Summarize(string family, IReadOnlyList<IReadOnlyList<EvaluatedSample>> perProblem, IReadOnlyList<int> ks)
    {
        var all = perProblem.SelectMany(g => g).ToList();
        var candidates = perProblem.Select(g => (IReadOnlyList<GradedCandidate>)g.Select(c => c.Candidate).ToList()).ToList();
        double Mean(bool correct) => all.Where(c => c.Candidate.Correct == correct).Select(c => c.Candidate.Score).DefaultIfEmpty(double.NaN).Average();
        return new FamilyEval
        {
            Family = family,
            Problems = perProblem.Count,
            PassAt1 = all.Count(c => c.Candidate.Correct) / (double)all.Count,
            SprmAuroc = ScalingStatistics.Auroc(all.Select(c => c.Candidate.Score).ToList(), all.Select(c => c.Candidate.Correct).ToList()),
            MeanScoreCorrect = Mean(true),
            MeanScoreWrong = Mean(false),
            MeanThinkingTokens = all.Average(c => c.Candidate.ThinkingTokens),
            FinishedFraction = all.Count(c => c.Finished) / (double)all.Count,
            TiesAtTop = perProblem.Count(p => HasTieAtTop(p.Select(c => (c.Candidate.Score, c.Text)).ToList())) / (double)perProblem.Count,
            ByK = ks.OrderBy(k => k).Select(k => ScalingStatistics.AtK(candidates, k)).ToList(),
        };
    }

    /// <summary>
    /// True when two candidates with different texts both score within <see cref="CandidateSelection.ScoreTieTolerance"/> of the
    /// best score: there SPRM Best-of-N is decided by the tie-break (lowest index), not by the scores.
    /// </summary>
    public static bool HasTieAtTop(IReadOnlyList<(double Score, string Text)> candidates)
    {
        if (candidates.Count < 2) return false;
        double top = candidates.Max(c => c.Score);
        return candidates.Where(c => top - c.Score <= CandidateSelection.ScoreTieTolerance).Select(c => c.Text).Distinct(StringComparer.Ordinal).Skip(1).Any();
    }

    /// <summary><paramref name="count"/> test-split problems alternating chain, search, chain, … (for sweeps over both families).</summary>
    public static IReadOnlyList<TaskExample> TestProblemsMixed(int count, int seed = 1)
    {
        var chain = TestProblems((count + 1) / 2, seed, TaskFamily.Chain);
        var search = TestProblems(count / 2, seed, TaskFamily.Search);
        return [.. Enumerable.Range(0, count).Select(i => i % 2 == 0 ? chain[i / 2] : search[i / 2])];
    }

    /// <summary>
    /// The default held-out problems: <paramref name="count"/> problems of the test split per family (both families
    /// when <paramref name="family"/> is null, chain problems first).
    /// </summary>
    public static IReadOnlyList<TaskExample> TestProblems(int count, int seed = 1, TaskFamily? family = null)
    {
        var families = family is { } f ? [f] : new[] { TaskFamily.Chain, TaskFamily.Search };
        return families.SelectMany(fam => TinyModelBuilder.Tasks.Generate(TaskSplits.Test, count, seed, fam)).Select(p => p.ToExample()).ToList();
    }
}
