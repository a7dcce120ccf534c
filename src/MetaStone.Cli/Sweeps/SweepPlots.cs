using System.Globalization;
using MetaStone.Reasoning.Scaling;
using ScottPlot;

namespace MetaStone.Cli.Sweeps;

/// <summary>The sweep's two pictures: accuracy vs compute on a log axis with the fitted lines, and accuracy vs thinking budget at the largest k.</summary>
public static class SweepPlots
{
    public const string ComputeFile = "accuracy-vs-compute.png";
    public const string BudgetFile = "accuracy-vs-budget.png";

    private static readonly (SweepMethod Method, string Label)[] Series =
    [
        (SweepMethod.SprmBestOfN, "SPRM Best-of-N"),
        (SweepMethod.MajorityVote, "majority vote"),
        (SweepMethod.SprmWeightedVote, "SPRM-weighted vote"),
        (SweepMethod.RandomPick, "random pick"),
        (SweepMethod.OraclePassAtK, "oracle pass@k"),
    ];

    private static Color ColorOf(int series) => new ScottPlot.Palettes.Category10().GetColor(series);

    /// <summary>Writes both PNGs into <paramref name="directory"/> and returns their paths.</summary>
    public static IReadOnlyList<string> Write(string directory, SweepSummary summary, int width = 1000, int height = 620)
    {
        var written = new List<string>();
        string compute = Path.Combine(directory, ComputeFile);
        AccuracyVsCompute(summary).SavePng(compute, width, height);
        written.Add(compute);
        if (summary.Budgets.Count >= 1)
        {
            string budget = Path.Combine(directory, BudgetFile);
            AccuracyVsBudget(summary).SavePng(budget, width, height);
            written.Add(budget);
        }
        return written;
    }

    private static readonly MarkerShape[] BudgetShapes =
    [
        MarkerShape.FilledCircle, MarkerShape.FilledSquare, MarkerShape.FilledTriangleUp, MarkerShape.FilledDiamond,
        MarkerShape.FilledTriangleDown, MarkerShape.OpenCircle, MarkerShape.OpenSquare, MarkerShape.OpenTriangleUp,
    ];

    public static Plot AccuracyVsCompute(SweepSummary summary)
    {
        var plot = new Plot();
        var budgets = summary.Budgets.OrderBy(b => b ?? int.MaxValue).ToList();
        // Colour = method, marker = budget: points of one budget sit together, k grows to the right within it.
        for (int i = 0; i < Series.Length; i++)
        {
            var (method, label) = Series[i];
            var fit = summary.Fits.FirstOrDefault(f => f.Method == method)?.Fit;
            for (int b = 0; b < budgets.Count; b++)
            {
                var points = summary.Points.Where(p => p.Method == method && p.Budget == budgets[b] && p.Compute > 0).OrderBy(p => p.Compute).ToList();
                if (points.Count == 0) continue;
                var dots = plot.Add.Scatter(points.Select(p => Math.Log10(p.Compute)).ToArray(), points.Select(p => 100 * p.Accuracy).ToArray(), ColorOf(i));
                dots.LineWidth = 0;
                dots.MarkerSize = 7;
                dots.MarkerShape = BudgetShapes[b % BudgetShapes.Length];
            }
            if (fit is not null)
            {
                // The fitted law is a straight line on a log-compute axis: acc = a + b·ln(10)·log10 C.
                double x0 = Math.Log10(fit.MinCompute), x1 = Math.Log10(fit.MaxCompute);
                var line = plot.Add.Line(x0, 100 * fit.Predict(fit.MinCompute), x1, 100 * fit.Predict(fit.MaxCompute));
                line.Color = ColorOf(i);
                line.LineWidth = 2;
                line.LinePattern = LinePattern.Dashed;
            }
            plot.Legend.ManualItems.Add(new LegendItem
            {
                LabelText = fit is null ? label : string.Create(CultureInfo.InvariantCulture, $"{label}: b = {100 * fit.B:F2} pts/ln C, R² = {fit.RSquared:F2}"),
                MarkerStyle = new MarkerStyle(MarkerShape.FilledCircle, 7, ColorOf(i)),
                LineStyle = new LineStyle { Width = 2, Color = ColorOf(i), Pattern = LinePattern.Dashed },
            });
        }
        for (int b = 0; b < budgets.Count; b++)
            plot.Legend.ManualItems.Add(new LegendItem
            {
                LabelText = $"thinking budget {SweepOutput.Budget(budgets[b])}",
                MarkerStyle = new MarkerStyle(BudgetShapes[b % BudgetShapes.Length], 7, Colors.Gray),
            });
        SetLogTicks(plot, summary.Points.Where(p => p.Compute > 0).Select(p => p.Compute).DefaultIfEmpty(1).ToList());
        plot.Title($"{summary.Model.Name}: accuracy vs total thinking compute");
        plot.XLabel($"total thinking compute C (FLOPs, log scale) · {summary.Problems} problems, k {string.Join(",", summary.Ks)}, budgets {string.Join(",", summary.Budgets.Select(SweepOutput.Budget))}");
        plot.YLabel("accuracy (%)");
        plot.Axes.SetLimitsY(0, 100);
        plot.Legend.Alignment = Alignment.UpperLeft;
        plot.ShowLegend();
        return plot;
    }

    /// <summary>Ticks at 1, 2 and 5 × 10ⁿ over the data's range: a sweep often spans less than two decades.</summary>
    private static void SetLogTicks(Plot plot, IReadOnlyList<double> computes)
    {
        double lo = Math.Log10(computes.Min()), hi = Math.Log10(computes.Max());
        var positions = new List<double>();
        var labels = new List<string>();
        for (int decade = (int)Math.Floor(lo); decade <= (int)Math.Ceiling(hi); decade++)
            foreach (int m in new[] { 1, 2, 5 })
            {
                double x = decade + Math.Log10(m);
                if (x < lo - 0.15 || x > hi + 0.15) continue;
                positions.Add(x);
                labels.Add($"{m}e{decade}");
            }
        plot.Axes.Bottom.SetTicks(positions.ToArray(), labels.ToArray());
        plot.Axes.SetLimitsX(lo - 0.1 * Math.Max(0.1, hi - lo), hi + 0.1 * Math.Max(0.1, hi - lo));
    }

    public static Plot AccuracyVsBudget(SweepSummary summary)
    {
        var plot = new Plot();
        int k = summary.Ks.Max();
        var budgets = summary.Budgets.OrderBy(b => b ?? int.MaxValue).ToList();
        for (int i = 0; i < Series.Length; i++)
        {
            var (method, label) = Series[i];
            var xs = new List<double>();
            var ys = new List<double>();
            for (int b = 0; b < budgets.Count; b++)
                if (summary.Points.FirstOrDefault(p => p.Method == method && p.K == k && p.Budget == budgets[b]) is { } point)
                {
                    xs.Add(b);
                    ys.Add(100 * point.Accuracy);
                }
            if (xs.Count == 0) continue;
            var series = plot.Add.Scatter(xs.ToArray(), ys.ToArray(), ColorOf(i));
            series.LineWidth = 2;
            series.MarkerSize = 7;
            series.LegendText = label;
        }
        plot.Axes.Bottom.SetTicks(Enumerable.Range(0, budgets.Count).Select(i => (double)i).ToArray(), budgets.Select(SweepOutput.Budget).ToArray());
        plot.Title($"{summary.Model.Name}: accuracy vs thinking budget at k = {k}");
        plot.XLabel("thinking budget (tokens per candidate)");
        plot.YLabel("accuracy (%)");
        plot.Axes.SetLimitsY(0, 100);
        plot.Axes.SetLimitsX(-0.3, Math.Max(0.3, budgets.Count - 0.7));
        plot.Legend.Alignment = Alignment.UpperLeft;
        plot.ShowLegend();
        return plot;
    }
}
