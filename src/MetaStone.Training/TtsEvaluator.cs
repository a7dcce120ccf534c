using System.Diagnostics;
using MetaStone.Model;
using MetaStone.Model.Generation;
using MetaStone.Reasoning;
using MetaStone.Training.Tasks;

namespace MetaStone.Training;

/// <summary>The evaluation table of a model: pass@1, selection accuracy at each k, and how well the SPRM separates right from wrong.</summary>
public sealed record EvalReport
{
    public required string Model { get; init; }
    public required int Problems { get; init; }
    public required int SamplesPerProblem { get; init; }
    public required long Seed { get; init; }
    /// <summary>Accuracy of a single sample (mean over all samples).</summary>
    public required double PassAt1 { get; init; }
    /// <summary>Trajectory score (geometric mean of step scores) separating correct from wrong trajectories.</summary>
    public required double SprmAuroc { get; init; }
    public required double MeanScoreCorrect { get; init; }
    public required double MeanScoreWrong { get; init; }
    public required double MeanThinkingTokens { get; init; }
    public required double FinishedFraction { get; init; }
    public required IReadOnlyList<KAccuracy> ByK { get; init; }
    public required double Seconds { get; init; }

    public string ToTable()
    {
        var lines = new List<string>
        {
            $"model {Model}: {Problems} test problems × {SamplesPerProblem} samples (seed {Seed}), {Seconds:F0} s",
            $"pass@1 {PassAt1:P1}   SPRM AUROC {SprmAuroc:F3}   mean score correct {MeanScoreCorrect:F3} / wrong {MeanScoreWrong:F3}   mean thinking tokens {MeanThinkingTokens:F1}   finished {FinishedFraction:P1}",
            "",
            "|  k | SPRM Best-of-N | majority vote | SPRM-weighted vote | random pick | oracle pass@k | groups |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        };
        foreach (var r in ByK)
            lines.Add($"| {r.K,2} | {r.SprmBestOfN:P1} | {r.MajorityVote:P1} | {r.SprmWeightedVote:P1} | {r.RandomPick:P1} | {r.OraclePassAtK:P1} | {r.Groups} |");
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
        var graded = await Task.WhenAll(problems.Select(async (problem, index) =>
        {
            var request = new GenerationRequest
            {
                PromptIds = model.EncodePrompt(problem.Prompt),
                Seeds = Enumerable.Range(0, kMax).Select(i => seed + (long)index * 100_000 + i).ToArray(),
                Sampling = sampling ?? new SamplingOptions { MaxNewTokens = 256 },
            };
            var trajectories = await model.Engine.GenerateAsync(request, cancellationToken).ConfigureAwait(false);
            var result = trajectories.Select(t =>
            {
                var described = model.Describe(t);
                return (Candidate: new GradedCandidate(described.Score, described.Answer, AnswerGrader.IsCorrect(described.Text, problem.Answer), t.ThinkingTokens),
                        Finished: t.FinishReason == FinishReason.Stop);
            }).ToList();
            progress?.Invoke(Interlocked.Increment(ref done), problems.Count);
            return result;
        })).ConfigureAwait(false);

        var all = graded.SelectMany(g => g).ToList();
        var perProblem = graded.Select(g => (IReadOnlyList<GradedCandidate>)g.Select(c => c.Candidate).ToList()).ToList();
        double Mean(bool correct) => all.Where(c => c.Candidate.Correct == correct).Select(c => c.Candidate.Score).DefaultIfEmpty(double.NaN).Average();
        return new EvalReport
        {
            Model = model.Directory,
            Problems = problems.Count,
            SamplesPerProblem = kMax,
            Seed = seed,
            PassAt1 = all.Count(c => c.Candidate.Correct) / (double)all.Count,
            SprmAuroc = ScalingStatistics.Auroc(all.Select(c => c.Candidate.Score).ToList(), all.Select(c => c.Candidate.Correct).ToList()),
            MeanScoreCorrect = Mean(true),
            MeanScoreWrong = Mean(false),
            MeanThinkingTokens = all.Average(c => c.Candidate.ThinkingTokens),
            FinishedFraction = all.Count(c => c.Finished) / (double)all.Count,
            ByK = ks.OrderBy(k => k).Select(k => ScalingStatistics.AtK(perProblem, k)).ToList(),
            Seconds = clock.Elapsed.TotalSeconds,
        };
    }

    /// <summary>The default held-out problems: the task's test split.</summary>
    public static IReadOnlyList<TaskExample> TestProblems(int count, int seed = 1) =>
        TinyModelBuilder.Task.Generate(TaskSplits.Test, count, seed).Select(p => new TaskExample(p.Prompt, p.AnswerText, p.Id)).ToList();
}
