namespace MetaStone.Tests.Shared;

/// <summary>
/// Copies of a model directory with one file broken each, under a temporary root that <see cref="Dispose"/> removes: the
/// bad-input tests of the model library and of the CLI break the shipped tiny model the same way (one source file,
/// linked into both test projects).
/// </summary>
internal sealed class BrokenModelCopies(string source) : IDisposable
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), "metastone-broken-" + Guid.NewGuid().ToString("N")[..8]);

    /// <summary>A copy of the source directory named <paramref name="name"/>, after <paramref name="breakIt"/> ran on it.</summary>
    public string Make(string name, Action<string> breakIt)
    {
        string dir = Path.Combine(Root, name);
        Directory.CreateDirectory(dir);
        foreach (var file in Directory.GetFiles(source)) File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
        breakIt(dir);
        return dir;
    }

    /// <summary>Keeps the first <paramref name="keep"/> bytes of a file.</summary>
    public static void Truncate(string path, int keep) => File.WriteAllBytes(path, File.ReadAllBytes(path)[..keep]);

    public void Dispose()
    {
        if (Directory.Exists(Root)) Directory.Delete(Root, recursive: true);
    }
}
