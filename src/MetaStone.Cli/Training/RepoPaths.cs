namespace MetaStone.Cli.Training;

/// <summary>Where the checkout's shipped models live, found from the working directory or the binary.</summary>
public static class RepoPaths
{
    public const string TinyModelRelative = "models/metastone-tiny";

    public static string? FindRepoRoot()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "MetaStone.Cluster.sln"))) return dir.FullName;
        }
        return null;
    }

    /// <summary>The embedded default model directory (models/metastone-tiny of the checkout).</summary>
    public static string DefaultModel => Path.Combine(FindRepoRoot() ?? Directory.GetCurrentDirectory(), TinyModelRelative);
}
