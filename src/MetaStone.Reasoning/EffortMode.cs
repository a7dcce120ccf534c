namespace MetaStone.Reasoning;

/// <summary>Effort modes of MetaStone-S1: how many candidate trajectories one query becomes.</summary>
public static class EffortMode
{
    public const int MinK = 1;
    public const int MaxK = 256;

    /// <summary>low / medium / high = 2 / 8 / 32 (the released README and compute_metric.py).</summary>
    public static int CandidatesFor(string effort) => effort.Trim().ToLowerInvariant() switch
    {
        "low" => 2,
        "medium" => 8,
        "high" => 32,
        _ => throw new ArgumentException($"unknown effort '{effort}' (valid: low, medium, high)", nameof(effort)),
    };

    /// <summary>Resolves an explicit k (which wins) or an effort name into a validated candidate count.</summary>
    public static int ResolveK(string? effort, int? k)
    {
        if (k is int explicitK)
        {
            if (explicitK < MinK || explicitK > MaxK)
                throw new ArgumentOutOfRangeException(nameof(k), explicitK, $"k must be between {MinK} and {MaxK}");
            return explicitK;
        }
        return CandidatesFor(effort ?? "medium");
    }
}
