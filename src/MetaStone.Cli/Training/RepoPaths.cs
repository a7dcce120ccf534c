namespace MetaStone.Cli.Training;

/// <summary>Where the checkout's shipped models live; the lookup itself is <see cref="ModelDirectoryResolver"/>'s.</summary>
public static class RepoPaths
{
    public const string TinyModelRelative = ModelDirectoryResolver.DefaultModelRelativePath;

    public static string? FindRepoRoot() => ModelDirectoryResolver.FindRepositoryRoot();

    /// <summary>The embedded default model directory (models/metastone-tiny of the checkout).</summary>
    public static string DefaultModel => Path.Combine(FindRepoRoot() ?? Directory.GetCurrentDirectory(), TinyModelRelative);
}
