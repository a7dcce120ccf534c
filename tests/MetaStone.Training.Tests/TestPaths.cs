namespace MetaStone.Training.Tests;

/// <summary>Locates the repository root (the folder holding MetaStone.Cluster.sln) from the test binary's directory.</summary>
internal static class TestPaths
{
    public static string RepoRoot { get; } = FindRepoRoot();

    /// <summary>A fresh, empty scratch directory under the system temp folder.</summary>
    public static string NewTempDirectory(string prefix)
    {
        var path = Path.Combine(Path.GetTempPath(), $"{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(path);
        return path;
    }

    private static string FindRepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "MetaStone.Cluster.sln")))
            dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("MetaStone.Cluster.sln not found above " + AppContext.BaseDirectory);
    }
}
