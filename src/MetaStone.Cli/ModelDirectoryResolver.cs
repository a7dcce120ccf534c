namespace MetaStone.Cli;

/// <summary>
/// Finds the model directory a verb should use when <c>--model</c> is not given: <c>models/metastone-tiny</c>
/// under the repository root (the folder holding <see cref="SolutionFileName"/>), so the command works from any
/// sub-folder of a checkout and from the built CLI in <c>artifacts/cli</c> alike.
/// </summary>
public static class ModelDirectoryResolver
{
    public const string SolutionFileName = "MetaStone.Cluster.sln";
    public const string DefaultModelRelativePath = "models/metastone-tiny";

    /// <summary>The repository root above the current directory, else above the CLI's own binaries; null when neither is in a checkout.</summary>
    public static string? FindRepositoryRoot() =>
        FindRepositoryRoot([Environment.CurrentDirectory, AppContext.BaseDirectory]);

    public static string? FindRepositoryRoot(IEnumerable<string> startDirectories)
    {
        foreach (var start in startDirectories)
        {
            for (var directory = new DirectoryInfo(start); directory is not null; directory = directory.Parent)
            {
                if (File.Exists(Path.Combine(directory.FullName, SolutionFileName)))
                    return directory.FullName;
            }
        }
        return null;
    }

    /// <summary>
    /// The default model directory under <paramref name="repositoryRoot"/>, or an error message that says the tiny
    /// model has not been trained yet and how to point at another model.
    /// </summary>
    public static (string? Directory, string? Error) ResolveDefault(string? repositoryRoot)
    {
        if (repositoryRoot is null)
            return (null, $"no --model given and no {SolutionFileName} found above the current directory or the CLI's folder, so the default "
                + $"{DefaultModelRelativePath} cannot be located: pass --model DIR (a Hugging Face layout directory with config.json, "
                + "model.safetensors, tokenizer.json and score_module.safetensors)");
        var directory = Path.Combine(repositoryRoot, DefaultModelRelativePath);
        if (!Directory.Exists(directory))
            return (null, $"the tiny model is not trained yet: {directory} does not exist. Train it first (src/MetaStone.Training), "
                + "or pass --model DIR to use another model directory (config.json, model.safetensors, tokenizer.json, score_module.safetensors)");
        return (directory, null);
    }
}
