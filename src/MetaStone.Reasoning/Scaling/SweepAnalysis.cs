namespace MetaStone.Reasoning.Scaling;

/// <summary>The selection methods a sweep measures; the last two are references, not deployable selectors.</summary>
public enum SweepMethod
{
    SprmBestOfN,
    MajorityVote,
    SprmWeightedVote,
    /// <summary>Expected accuracy of a uniformly random candidate of the group (= pass@1 at that budget).</summary>
    RandomPick,
    /// <summary>1 when any candidate of the group is correct: the ceiling a perfect verifier would reach.</summary>
    OraclePassAtK,
}

/// <summary>
/// How a sweep counts thinking compute: <c>C = 2 · N · T + H · S</c>, with N the policy's parameters, T the
/// thinking tokens summed over the k candidates, S the steps the SPRM head scored over the k candidates and
/// H = 2 · (c · 2c + 2c · 1) the head's FLOPs per scored step (c = the backbone's hidden size).
/// </summary>
public sealed record ComputeModel(long PolicyParameters, int HeadHiddenSize)
{
    public double HeadFlopsPerStep => 2.0 * (HeadHiddenSize * 2.0 * HeadHiddenSize + 2.0 * HeadHiddenSize);

    public double Flops(double thinkingTokens, double steps) => 2.0 * PolicyParameters * thinkingTokens + HeadFlopsPerStep * steps;

    public string Describe() =>
        $"C = 2 · N · T + H · S FLOPs, N = {PolicyParameters:N0} policy parameters, T = thinking tokens summed over the k candidates, " +
        $"S = SPRM-scored steps summed over the k candidates, H = 2·(c·2c + 2c) = {HeadFlopsPerStep:N0} FLOPs per step (c = {HeadHiddenSize})";
}

/// <summary>The candidates generated for one problem at one thinking budget (null = no budget).</summary>
public sealed record SweepSamples(int Problem, int? Budget, IReadOnlyList<GradedCandidate> Candidates);

/// <summary>
/// One point of a sweep: a method's accuracy at (budget, k), averaged over problems and over
/// <see cref="Seeds"/> subsampling seeds (<see cref="SeedStdDev"/> is the spread between seeds), with the mean
/// thinking tokens and scored steps summed over the k candidates and the compute they cost.
/// </summary>
public sealed record SweepPoint(int? Budget, int K, SweepMethod Method, double Accuracy, double SeedStdDev, double MeanThinkingTokens,
    double MeanSteps, double Compute, int Problems, int ProblemsShort, int Seeds);

/// <summary>A method's scaling-law fit over a set of sweep points.</summary>
public sealed record SweepFit(SweepMethod Method, int? Budget, LogLinearFit Fit);

/// <summary>Every point of a sweep and the fits made from them.</summary>
public sealed record SweepReport(IReadOnlyList<SweepPoint> Points, IReadOnlyList<SweepFit> Fits, IReadOnlyList<SweepFit> FitsByBudget, string ComputeDefinition);

/// <summary>
/// Turns one generation of k_max candidates per (problem, budget) into accuracy at every smaller k, the
/// "generate once, subsample" method: for each seed the candidates of a problem are put in a random order
/// (seed 0 keeps generation order, which is the released compute_metric.py grouping) and cut into ⌊n/k⌋
/// disjoint groups of k; every group is scored under every method, groups and problems are averaged, and
/// the seeds are averaged with their spread reported. A problem with fewer than k candidates contributes one
/// group of all it has and is counted in <see cref="SweepPoint.ProblemsShort"/>.
/// </summary>
public static class SweepAnalysis
{
    public static readonly SweepMethod[] Methods = Enum.GetValues<SweepMethod>();

    public static IReadOnlyList<SweepPoint> Points(IReadOnlyList<SweepSamples> samples, IReadOnlyList<int> ks, int seeds, ComputeModel compute)
    {
        ArgumentNullException.ThrowIfNull(samples);
        ArgumentNullException.ThrowIfNull(compute);
        if (ks.Count == 0) throw new ArgumentException("no k to evaluate", nameof(ks));
        if (ks.Any(k => k < 1)) throw new ArgumentOutOfRangeException(nameof(ks), "every k must be ≥ 1");
        ArgumentOutOfRangeException.ThrowIfLessThan(seeds, 1);
        var points = new List<SweepPoint>();
        foreach (var budgetGroup in samples.GroupBy(s => s.Budget).OrderBy(g => g.Key ?? int.MaxValue))
        {
            var problems = budgetGroup.Where(s => s.Candidates.Count > 0).OrderBy(s => s.Problem).ToList();
            if (problems.Count == 0) continue;
            foreach (int k in ks.Distinct().Order())
            {
                var perSeed = new double[seeds, Methods.Length];
                double tokens = 0, steps = 0;
                for (int seed = 0; seed < seeds; seed++)
                {
                    var sums = new double[Methods.Length];
                    foreach (var problem in problems)
                    {
                        var outcome = AverageOverGroups(Order(problem, seed), k);
                        for (int m = 0; m < Methods.Length; m++) sums[m] += Value(outcome.Mean, Methods[m]);
                        // Token and step counts of a group do not depend on which method chooses; average them over seeds too.
                        tokens += outcome.Mean.ThinkingTokens;
                        steps += outcome.Mean.Steps;
                    }
                    for (int m = 0; m < Methods.Length; m++) perSeed[seed, m] = sums[m] / problems.Count;
                }
                double meanTokens = tokens / (seeds * (double)problems.Count);
                double meanSteps = steps / (seeds * (double)problems.Count);
                int shortProblems = problems.Count(p => p.Candidates.Count < k);
                for (int m = 0; m < Methods.Length; m++)
                {
                    var values = Enumerable.Range(0, seeds).Select(s => perSeed[s, m]).ToArray();
                    double mean = values.Average();
                    double std = seeds > 1 ? Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / (seeds - 1)) : 0;
                    points.Add(new SweepPoint(budgetGroup.Key, k, Methods[m], mean, std, meanTokens, meanSteps,
                        compute.Flops(meanTokens, meanSteps), problems.Count, shortProblems, seeds));
                }
            }
        }
        return points;
    }

    /// <summary>Per method, a fit over all its points; and per (method, budget), a fit over k alone where a budget has ≥ 2 computes.</summary>
    public static SweepReport Analyse(IReadOnlyList<SweepSamples> samples, IReadOnlyList<int> ks, int seeds, ComputeModel compute)
    {
        var points = Points(samples, ks, seeds, compute);
        var fits = new List<SweepFit>();
        var byBudget = new List<SweepFit>();
        foreach (var method in Methods)
        {
            var mine = points.Where(p => p.Method == method).ToList();
            if (TryFit(mine) is LogLinearFit all) fits.Add(new SweepFit(method, null, all));
            foreach (var budget in mine.GroupBy(p => p.Budget))
                if (budget.Select(p => p.Compute).Distinct().Count() >= 2 && TryFit(budget.ToList()) is LogLinearFit one)
                    byBudget.Add(new SweepFit(method, budget.Key, one));
        }
        return new SweepReport(points, fits, byBudget, compute.Describe());
    }

    private static LogLinearFit? TryFit(IReadOnlyList<SweepPoint> points)
    {
        var usable = points.Where(p => p.Compute > 0).Select(p => new ComputePoint(p.Compute, p.Accuracy)).ToList();
        if (usable.Count < 2 || usable.Select(p => p.Compute).Distinct().Count() < 2) return null;
        return LogLinearFit.Fit(usable);
    }

    public static double Value(GroupOutcomeMean outcome, SweepMethod method) => method switch
    {
        SweepMethod.SprmBestOfN => outcome.SprmBestOfN,
        SweepMethod.MajorityVote => outcome.MajorityVote,
        SweepMethod.SprmWeightedVote => outcome.SprmWeightedVote,
        SweepMethod.RandomPick => outcome.RandomPick,
        SweepMethod.OraclePassAtK => outcome.OraclePassAtK,
        _ => throw new ArgumentOutOfRangeException(nameof(method), method, null),
    };

    public static string Name(SweepMethod method) => method switch
    {
        SweepMethod.SprmBestOfN => "sprm-best-of-n",
        SweepMethod.MajorityVote => "majority-vote",
        SweepMethod.SprmWeightedVote => "sprm-weighted-vote",
        SweepMethod.RandomPick => "random-pick",
        SweepMethod.OraclePassAtK => "oracle-pass-at-k",
        _ => method.ToString(),
    };

    /// <summary>The candidates of a problem in seed order: seed 0 = generation order, others a seeded shuffle.</summary>
    public static IReadOnlyList<GradedCandidate> Order(SweepSamples problem, int seed)
    {
        if (seed == 0) return problem.Candidates;
        // A fixed mix, not HashCode.Combine (randomised per process): the same sweep must analyse the same way every time.
        var rng = new Random(unchecked(seed * 73_856_093 ^ problem.Problem * 19_349_663 ^ (problem.Budget ?? -1) * 83_492_791));
        var copy = problem.Candidates.ToArray();
        rng.Shuffle(copy);
        return copy;
    }

    /// <summary>The mean outcome over ⌊n/k⌋ disjoint groups of k (one group of all n when n &lt; k), and how many groups.</summary>
    public static (GroupOutcomeMean Mean, int Groups) AverageOverGroups(IReadOnlyList<GradedCandidate> candidates, int k)
    {
        if (candidates.Count == 0) throw new ArgumentException("no candidates", nameof(candidates));
        int size = Math.Min(k, candidates.Count);
        int groups = candidates.Count / size;
        double b = 0, m = 0, w = 0, r = 0, o = 0, t = 0, s = 0;
        for (int g = 0; g < groups; g++)
        {
            var outcome = GroupOutcome.Of(new ArraySegmentList(candidates, g * size, size));
            b += outcome.SprmBestOfN; m += outcome.MajorityVote; w += outcome.SprmWeightedVote;
            r += outcome.RandomPick; o += outcome.OraclePassAtK; t += outcome.ThinkingTokens; s += outcome.Steps;
        }
        return (new GroupOutcomeMean(b / groups, m / groups, w / groups, r / groups, o / groups, t / groups, s / groups), groups);
    }

    private sealed class ArraySegmentList(IReadOnlyList<GradedCandidate> source, int offset, int count) : IReadOnlyList<GradedCandidate>
    {
        public GradedCandidate this[int index] => (uint)index < (uint)count ? source[offset + index] : throw new ArgumentOutOfRangeException(nameof(index));
        public int Count => count;
        public IEnumerator<GradedCandidate> GetEnumerator()
        {
            for (int i = 0; i < count; i++) yield return source[offset + i];
        }
        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }
}

/// <summary>A <see cref="GroupOutcome"/> averaged over groups (accuracies become fractions, counts become means).</summary>
public readonly record struct GroupOutcomeMean(double SprmBestOfN, double MajorityVote, double SprmWeightedVote, double RandomPick, double OraclePassAtK,
    double ThinkingTokens, double Steps);
