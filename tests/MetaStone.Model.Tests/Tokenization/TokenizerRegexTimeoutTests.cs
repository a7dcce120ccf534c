using System.Diagnostics;
using System.Text.Json.Nodes;
using MetaStone.Model.Tokenization;

namespace MetaStone.Model.Tests.Tokenization;

/// <summary>
/// Issue 11 item 7: a tokenizer.json whose Split regex backtracks catastrophically (<c>(a+)+b</c>) hung generation;
/// now a match is bounded (2 s) and the encode fails with a message naming the pattern.
/// </summary>
public sealed class TokenizerRegexTimeoutTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "metastone-regex-" + Guid.NewGuid().ToString("N")[..8]);

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public async Task ACatastrophicSplitPatternFailsWithinTheTimeoutInsteadOfHanging()
    {
        string tiny = Path.Combine(TestPaths.RepoRoot, "models", "metastone-tiny");
        Directory.CreateDirectory(_dir);
        foreach (var file in Directory.GetFiles(tiny)) File.Copy(file, Path.Combine(_dir, Path.GetFileName(file)));
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "tokenizer.json")))!;
        json["pre_tokenizer"]!["pretokenizers"]![0]!["pattern"]!["Regex"] = "(a+)+b";
        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), json.ToJsonString());

        var tokenizer = QwenTokenizer.FromDirectory(_dir);
        var clock = Stopwatch.StartNew();
        var encode = Task.Run(() => tokenizer.Encode(new string('a', 40) + "c"));
        var finished = await Task.WhenAny(encode, Task.Delay(TimeSpan.FromSeconds(60)));
        Assert.True(finished == encode, "encoding hung for 60 s: no regex timeout");
        var error = await Assert.ThrowsAsync<ArgumentException>(() => encode);
        Assert.Contains("(a+)+b", error.Message);
        Assert.Contains("catastrophic backtracking", error.Message);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), $"took {clock.Elapsed.TotalSeconds:0.0} s");
        // Ordinary text still encodes with the same file.
        Assert.NotEmpty(tokenizer.Encode("Compute 1 + 2."));
    }
}
