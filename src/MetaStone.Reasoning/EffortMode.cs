namespace MetaStone.Reasoning;

/// <summary>
/// The candidate counts of the effort modes and the range of k. The words low / medium / high are parsed by the request
/// contract (<c>MetaStone.Contracts.RequestText</c>); this is where their numbers live.
/// </summary>
public static class EffortMode
{
    public const int MinK = 1;
    public const int MaxK = 256;

    /// <summary>low / medium / high = 2 / 8 / 32 (the released README and compute_metric.py).</summary>
    public const int LowK = 2, MediumK = 8, HighK = 32;
}
