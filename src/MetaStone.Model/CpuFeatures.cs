namespace MetaStone.Model;

/// <summary>CPU instruction-set flags that decide whether bf16 inference pays off on this machine.</summary>
public static class CpuFeatures
{
    private static readonly Lazy<HashSet<string>> Flags = new(ReadFlags);

    public static IReadOnlySet<string> All => Flags.Value;

    /// <summary>bf16 matrix products are fast only with AVX512-BF16 or AMX; elsewhere they are slower than fp32.</summary>
    public static bool HasFastBf16 => IsFastBf16(Flags.Value);

    /// <summary>Why batched bf16 decode steps do not run in the native AVX512-BF16 kernel (<c>libmetastone_bf16.so</c>,
    /// next to this assembly), or null when they do.</summary>
    public static string? NativeBf16Unavailable => Kernels.NativeBf16.Unavailable;

    /// <summary>The same rule for a given flag set (e.g. a cpuinfo file the doctor was pointed at).</summary>
    public static bool IsFastBf16(IReadOnlySet<string> flags) => flags.Contains("avx512_bf16") || flags.Contains("amx_bf16");

    private static HashSet<string> ReadFlags()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
                if (line.StartsWith("flags", StringComparison.Ordinal))
                    return [.. line[(line.IndexOf(':') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries)];
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return [];
    }
}
