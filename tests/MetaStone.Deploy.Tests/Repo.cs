namespace MetaStone.Deploy.Tests;

/// <summary>Paths of the checkout under test, found from the test binary (tests run from bin/…).</summary>
internal static class Repo
{
    public static string Root { get; } = FindRoot();

    public static string ComposeDir => Path.Combine(Root, "compose");
    public static string DeployDir => Path.Combine(Root, "deploy");

    /// <summary>The silo host project: built in another worktree, so it may not be in this checkout yet.</summary>
    public const string SiloProject = "src/MetaStone.Silo";

    public static bool SiloProjectExists => Directory.Exists(Path.Combine(Root, SiloProject))
        && Directory.EnumerateFiles(Path.Combine(Root, SiloProject), "*.csproj").Any();

    public const string SiloMissingReason =
        "src/MetaStone.Silo is not in this tree yet (the silo host is being built in another worktree); "
        + "this check runs by itself once it is merged.";

    public static string Full(string relative) => Path.GetFullPath(Path.Combine(Root, relative));

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "MetaStone.Cluster.sln"))) return dir.FullName;
        throw new InvalidOperationException($"MetaStone.Cluster.sln not found above {AppContext.BaseDirectory}");
    }
}

/// <summary>A fact that is skipped, with the reason shown, while src/MetaStone.Silo does not exist.</summary>
/// <remarks>xunit 2 has no run-time skip; deciding in the attribute keeps the reason visible in the results.</remarks>
public sealed class SiloFactAttribute : FactAttribute
{
    public SiloFactAttribute()
    {
        if (!Repo.SiloProjectExists) Skip = Repo.SiloMissingReason;
    }
}
