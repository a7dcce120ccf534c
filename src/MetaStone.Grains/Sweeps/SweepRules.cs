using MetaStone.Contracts;

namespace MetaStone.Grains.Sweeps;

/// <summary>What a sweep request must satisfy before it is accepted; every rule names the field it checks.</summary>
public static class SweepRules
{
    public const int MaxK = 256;
    public const int MaxProblems = 100_000;

    public static void Validate(SweepRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.Problems is null || request.Problems.Count == 0) throw new ArgumentException("the sweep has no problems (is the dataset empty?)");
        if (request.Problems.Count > MaxProblems) throw new ArgumentException($"the sweep has {request.Problems.Count} problems; at most {MaxProblems} are allowed");
        for (int i = 0; i < request.Problems.Count; i++)
        {
            var p = request.Problems[i];
            if (string.IsNullOrWhiteSpace(p.Prompt)) throw new ArgumentException($"problem {i} has an empty prompt");
            if (string.IsNullOrWhiteSpace(p.Answer)) throw new ArgumentException($"problem {i} has an empty answer");
        }
        if (request.Ks is null || request.Ks.Count == 0) throw new ArgumentException("no k values: give --k, e.g. 1,2,4,8");
        foreach (int k in request.Ks)
            if (k < 1 || k > MaxK) throw new ArgumentException($"k = {k} is out of range (1–{MaxK})");
        if (request.Ks.Distinct().Count() != request.Ks.Count) throw new ArgumentException($"k values repeat: {string.Join(",", request.Ks)}");
        if (request.Budgets is null || request.Budgets.Count == 0) throw new ArgumentException("no thinking budgets: give --budgets, e.g. 64,128,256 (or 'none')");
        foreach (var b in request.Budgets)
            if (b is < 0) throw new ArgumentException($"thinking budget {b} is negative");
        if (request.Budgets.Distinct().Count() != request.Budgets.Count) throw new ArgumentException($"thinking budgets repeat: {string.Join(",", request.Budgets.Select(Label))}");
        if (request.SubsampleSeeds is < 1 or > 1000) throw new ArgumentException($"subsampling seeds must be 1–1000 (got {request.SubsampleSeeds})");
        if (request.MaxConcurrentItems is < 0 or > 4096) throw new ArgumentException($"concurrent items must be 0 (auto) to 4096 (got {request.MaxConcurrentItems})");
        // The sampling settings are those of the sweep's jobs, checked by the jobs' own rules: a sweep cannot accept what its jobs
        // would refuse (it used to accept temperature = ∞).
        Jobs.JobRequestRules.ValidateSampling(request.Sampling);
        if (request.Sampling.ThinkingBudget is int fixedBudget)
            throw new ArgumentException($"the sampling settings give a thinking budget ({fixedBudget}); a sweep's budgets are its list of budgets (--budgets)");
        Jobs.JobRequestRules.Validate(JobOf(request, 0));
    }

    public static string Label(int? budget) => budget is int b ? b.ToString(System.Globalization.CultureInfo.InvariantCulture) : "none";

    /// <summary>Item i is problem i / budgets, budget i % budgets.</summary>
    public static (int Problem, int BudgetIndex) ItemOf(SweepRequest request, int item) => (item / request.Budgets.Count, item % request.Budgets.Count);

    /// <summary>The coordinator job of an item: the same id in every run, so a resumed sweep finds the job (and its stored candidates).</summary>
    public static string JobId(string sweepId, SweepRequest request, int item)
    {
        var (problem, budget) = ItemOf(request, item);
        return $"{sweepId}/p{problem}/b{Label(request.Budgets[budget])}";
    }

    public static JobRequest JobOf(SweepRequest request, int item)
    {
        var (problem, budget) = ItemOf(request, item);
        return new JobRequest
        {
            Prompt = request.Problems[problem].Prompt,
            K = request.KMax,
            Sampling = request.Sampling with { ThinkingBudget = request.Budgets[budget] },
            Selection = WinnerSelection.BestOfN,
            Seed = request.Seed + 1000L * problem,
        };
    }

    /// <summary>Two requests are the same sweep when everything that decides what is measured matches (not the description or the concurrency).</summary>
    public static bool SameSweep(SweepRequest a, SweepRequest b) =>
        Durability.JobJson.Write(a with { Description = null, MaxConcurrentItems = 0 }) == Durability.JobJson.Write(b with { Description = null, MaxConcurrentItems = 0 });

    /// <summary>
    /// Items to run at once when the request says 0 (auto): enough jobs of k candidates to fill every replica's batch
    /// slots one and a half times over, so a replica never idles while an item's last candidates finish.
    /// </summary>
    public static int AutoConcurrency(int totalSlots, int k) => Math.Clamp((int)Math.Ceiling(1.5 * Math.Max(1, totalSlots) / Math.Max(1, k)), 2, 4096);
}
