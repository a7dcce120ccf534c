using System.Globalization;
using System.Text;
using MetaStone.Contracts;
using MetaStone.Reasoning;
using MetaStone.Reasoning.Scaling;

namespace MetaStone.Cli.Sweeps;

/// <summary>Everything a finished sweep reports: the analysis plus what it was run on.</summary>
public sealed record SweepSummary
{
    public required string SweepId { get; init; }
    public string? Description { get; init; }
    public required ModelInfo Model { get; init; }
    public required int Problems { get; init; }
    public required int CandidatesPerItem { get; init; }
    public required IReadOnlyList<int> Ks { get; init; }
    public required IReadOnlyList<int?> Budgets { get; init; }
    public required int SubsampleSeeds { get; init; }
    public required int ItemsFinished { get; init; }
    public required int ItemsTotal { get; init; }
    public required string ComputeDefinition { get; init; }
    public required IReadOnlyList<SweepPoint> Points { get; init; }
    public required IReadOnlyList<SweepFit> Fits { get; init; }
    public required IReadOnlyList<SweepFit> FitsByBudget { get; init; }
}

/// <summary>Turns a sweep's graded items into its points and fits, and writes them as CSV, JSON, JSONL and a table.</summary>
public static class SweepOutput
{
    public static SweepSummary Analyse(string sweepId, SweepRequest request, ModelInfo model, IReadOnlyList<SweepItemResult> items) =>
        Analyse(sweepId, request.Description, request.Problems.Count, request.Ks, request.Budgets, request.SubsampleSeeds, model, items);

    /// <summary>The analysis from the settings that shape it: also what <c>--reanalyse</c> runs on a saved report.</summary>
    public static SweepSummary Analyse(string sweepId, string? description, int problems, IReadOnlyList<int> ks, IReadOnlyList<int?> budgets,
        int seeds, ModelInfo model, IReadOnlyList<SweepItemResult> items)
    {
        var samples = items.Select(i => new SweepSamples(i.Problem, i.Budget,
            i.Candidates.Select(c => new GradedCandidate(c.Score, c.Answer, c.Correct, c.ThinkingTokens, c.Steps)).ToList())).ToList();
        // A model without an SPRM head scores nothing, so the head adds no compute.
        var compute = new ComputeModel(model.PolicyParameters, model.HeadParameters > 0 ? model.HiddenSize : 0);
        var report = SweepAnalysis.Analyse(samples, ks, seeds, compute);
        return new SweepSummary
        {
            SweepId = sweepId, Description = description, Model = model, Problems = problems,
            CandidatesPerItem = items.Count == 0 ? ks.Max() : items.Max(i => i.Candidates.Count), Ks = ks, Budgets = budgets,
            SubsampleSeeds = seeds, ItemsFinished = items.Count, ItemsTotal = problems * budgets.Count,
            ComputeDefinition = report.ComputeDefinition, Points = report.Points, Fits = report.Fits, FitsByBudget = report.FitsByBudget,
        };
    }

    public static string Budget(int? budget) => budget is int b ? b.ToString(CultureInfo.InvariantCulture) : "none";

    public static void WriteCsv(string path, IReadOnlyList<SweepPoint> points)
    {
        var s = new StringBuilder("budget,k,method,accuracy,seed_stddev,mean_thinking_tokens,mean_scored_steps,compute_flops,problems,problems_short,seeds\n");
        foreach (var p in points)
            s.AppendLine(string.Join(',',
                Budget(p.Budget), p.K.ToString(CultureInfo.InvariantCulture), SweepAnalysis.Name(p.Method), F(p.Accuracy), F(p.SeedStdDev),
                F(p.MeanThinkingTokens), F(p.MeanSteps), p.Compute.ToString("0.######e+00", CultureInfo.InvariantCulture),
                p.Problems.ToString(CultureInfo.InvariantCulture), p.ProblemsShort.ToString(CultureInfo.InvariantCulture), p.Seeds.ToString(CultureInfo.InvariantCulture)));
        File.WriteAllText(path, s.ToString());
    }

    public static void WriteFitsCsv(string path, SweepSummary summary)
    {
        var s = new StringBuilder("method,budget,a,b,r_squared,points,min_compute_flops,max_compute_flops\n");
        foreach (var (fit, budget) in summary.Fits.Select(f => (f, "all")).Concat(summary.FitsByBudget.Select(f => (f, Budget(f.Budget)))))
            s.AppendLine(string.Join(',', SweepAnalysis.Name(fit.Method), budget, F(fit.Fit.A), F(fit.Fit.B), F(fit.Fit.RSquared),
                fit.Fit.Points.ToString(CultureInfo.InvariantCulture), fit.Fit.MinCompute.ToString("0.######e+00", CultureInfo.InvariantCulture),
                fit.Fit.MaxCompute.ToString("0.######e+00", CultureInfo.InvariantCulture)));
        File.WriteAllText(path, s.ToString());
    }

    private static readonly System.Text.Json.JsonSerializerOptions OneLine = new(JsonOutput.SerializerOptions) { WriteIndented = false };

    /// <summary>The graded candidates themselves, one item per line, so a sweep can be re-analysed without the cluster.</summary>
    public static void WriteItems(string path, IReadOnlyList<SweepItemResult> items)
    {
        using var writer = new StreamWriter(path, false, new UTF8Encoding(false));
        foreach (var item in items.OrderBy(i => i.Item))
            writer.WriteLine(System.Text.Json.JsonSerializer.Serialize(item, OneLine));
    }

    private static readonly SweepMethod[] TableMethods =
        [SweepMethod.SprmBestOfN, SweepMethod.MajorityVote, SweepMethod.SprmWeightedVote, SweepMethod.RandomPick, SweepMethod.OraclePassAtK];

    public static string Table(SweepSummary summary)
    {
        var s = new StringBuilder();
        s.AppendLine(CultureInfo.InvariantCulture, $"sweep {summary.SweepId}: model {summary.Model.Name}, {summary.Problems} problems × {summary.Budgets.Count} budgets × {summary.CandidatesPerItem} candidates, {summary.SubsampleSeeds} subsampling seeds ({summary.ItemsFinished}/{summary.ItemsTotal} items)");
        s.AppendLine(summary.ComputeDefinition);
        foreach (var budget in summary.Points.GroupBy(p => p.Budget))
        {
            s.AppendLine();
            s.AppendLine(CultureInfo.InvariantCulture, $"thinking budget {Budget(budget.Key)}");
            s.AppendLine("|  k | SPRM Best-of-N | majority vote | SPRM-weighted vote | random pick | oracle pass@k | thinking tokens (Σk) | compute (FLOPs) |");
            s.AppendLine("|---:|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var k in budget.GroupBy(p => p.K).OrderBy(g => g.Key))
            {
                var row = k.ToDictionary(p => p.Method);
                var any = k.First();
                s.Append(CultureInfo.InvariantCulture, $"| {k.Key,2} |");
                foreach (var m in TableMethods)
                    s.Append(CultureInfo.InvariantCulture, $" {Percent(row[m].Accuracy)}{(row[m].SeedStdDev >= 0.0005 ? $" ± {100 * row[m].SeedStdDev:F1}" : "")} |");
                s.AppendLine(CultureInfo.InvariantCulture, $" {any.MeanThinkingTokens:F0} | {Sci(any.Compute)} |");
            }
        }
        s.AppendLine();
        s.AppendLine("fits accuracy = a + b · ln C over every (budget, k) point:");
        foreach (var fit in summary.Fits)
            s.AppendLine(CultureInfo.InvariantCulture,
                $"  {SweepAnalysis.Name(fit.Method),-20} a = {fit.Fit.A,8:F4}  b = {fit.Fit.B,8:F5} ({100 * fit.Fit.GainPerDoubling:+0.00;-0.00} points per doubling)  R² = {fit.Fit.RSquared:F3}  ({fit.Fit.Points} points)");
        return s.ToString();
    }

    public static string Sci(double v) => v.ToString("0.00e+00", CultureInfo.InvariantCulture);

    private static string Percent(double v) => (100 * v).ToString("F1", CultureInfo.InvariantCulture) + " %";
    private static string F(double v) => double.IsNaN(v) ? "" : v.ToString("G6", CultureInfo.InvariantCulture);
}
