namespace MetaStone.Model.Tests;

/// <summary>Locates the repository's test fixtures from the test binary's directory.</summary>
internal static class TestPaths
{
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string Fixtures => Path.Combine(RepoRoot, "tests", "fixtures");

    public static string Fixture(params string[] parts) => Path.Combine([Fixtures, .. parts]);

    private static string FindRepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "MetaStone.Cluster.sln")))
            dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("MetaStone.Cluster.sln not found above " + AppContext.BaseDirectory);
    }
}
