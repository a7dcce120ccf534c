namespace MetaStone.Bench;

/// <summary>What every benchmark report says about the machine it ran on (ratios are only comparable on one machine).</summary>
public static class BenchMachine
{
    /// <summary>1, 5 and 15 minute load averages from /proc/loadavg ("unknown" elsewhere).</summary>
    public static string LoadAverage()
    {
        try { return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)); }
        catch (IOException) { return "unknown"; }
        catch (UnauthorizedAccessException) { return "unknown"; }
    }

    /// <summary>CPU model and logical core count.</summary>
    public static string Description()
    {
        string? model = null;
        try { model = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim(); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return $"{model ?? "unknown CPU"}, {Environment.ProcessorCount} logical cores";
    }
}
