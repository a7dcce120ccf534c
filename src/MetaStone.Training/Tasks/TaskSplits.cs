namespace MetaStone.Training.Tasks;

/// <summary>Names of the data splits and the rule that assigns an expression to exactly one of them.</summary>
public static class TaskSplits
{
    public const string Train = "train";
    public const string Dev = "dev";
    public const string Test = "test";

    /// <summary>All split names, in a fixed order.</summary>
    public static IReadOnlyList<string> All { get; } = [Train, Dev, Test];

    /// <summary>Percent of the expression space reserved for dev (buckets 80–89) and test (buckets 90–99).</summary>
    public const int DevPercent = 10, TestPercent = 10;

    // Versioned salt: changing the split rule must change this so old and new data sets are never mixed silently.
    private const string SplitSalt = "metastone-arith-split-v1|";

    /// <summary>
    /// The split an expression belongs to: a stable 64-bit FNV-1a hash of the salted canonical text, bucketed
    /// mod 100. It depends on the text only (not on any seed), which is what makes the splits disjoint.
    /// </summary>
    public static string SplitOf(string canonicalExpression)
    {
        ArgumentNullException.ThrowIfNull(canonicalExpression);
        var bucket = (int)(Fnv1a64(SplitSalt + canonicalExpression) % 100);
        return bucket < 100 - DevPercent - TestPercent ? Train
            : bucket < 100 - TestPercent ? Dev
            : Test;
    }

    /// <summary>Returns the split's position in <see cref="All"/>, or throws for an unknown name.</summary>
    public static int IndexOf(string split)
    {
        for (var i = 0; i < All.Count; i++)
            if (string.Equals(All[i], split, StringComparison.Ordinal))
                return i;
        throw new ArgumentException($"Unknown split '{split}'; expected one of: {string.Join(", ", All)}.", nameof(split));
    }

    /// <summary>64-bit FNV-1a of the UTF-8 bytes: stable across processes (string.GetHashCode is randomized per process).</summary>
    internal static ulong Fnv1a64(string text)
    {
        var hash = 0xCBF29CE484222325UL;
        foreach (var b in System.Text.Encoding.UTF8.GetBytes(text))
        {
            hash ^= b;
            hash *= 0x100000001B3UL;
        }
        return hash;
    }
}
