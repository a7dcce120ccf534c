using System.CommandLine;
using System.Text.Json;
using MetaStone.Model;
using MetaStone.Model.Checkpoints;
using MetaStone.Training.Tasks;
using static TorchSharp.torch;

namespace MetaStone.Cli.Tests;

/// <summary>
/// A complete model directory in a temp folder: the random tiny Qwen2 fixture (vocab 512), a task tokenizer
/// (305 ids) and a random SPRM head. Built once for the class; the weights are random, so only the shape of
/// the output is checked, never the text.
/// </summary>
public sealed class GeneratedModelDirectory : IDisposable
{
    public string Directory { get; } = Path.Combine(Path.GetTempPath(), "metastone-generate-" + Guid.NewGuid().ToString("N"));

    public GeneratedModelDirectory()
    {
        System.IO.Directory.CreateDirectory(Directory);
        var fixture = Path.Combine(RepoRoot(), "tests", "fixtures", "qwen2-tiny-random");
        foreach (var name in new[] { "config.json", "model.safetensors" })
            File.Copy(Path.Combine(fixture, name), Path.Combine(Directory, name));
        new TaskTokenizerBuilder().BuildForTask(new ArithmeticChainTask(), Directory);
        manual_seed(5);
        using var head = new SprmHead(64, CPU);
        var state = head.StateDict();
        SafeTensors.Save(Path.Combine(Directory, ReflectiveModel.HeadSafetensorsName), state);
        foreach (var tensor in state.Values) tensor.Dispose();
    }

    public void Dispose()
    {
        try { System.IO.Directory.Delete(Directory, recursive: true); }
        catch (IOException) { }
    }

    public static string RepoRoot() =>
        ModelDirectoryResolver.FindRepositoryRoot([AppContext.BaseDirectory])
            ?? throw new InvalidOperationException("MetaStone.Cluster.sln not found above " + AppContext.BaseDirectory);
}

public sealed class GenerateCommandTests(GeneratedModelDirectory model) : IClassFixture<GeneratedModelDirectory>
{
    private static async Task<(int ExitCode, string Output, string Error)> RunAsync(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        var exitCode = await CliRootCommand.Create().Parse(args).InvokeAsync(new InvocationConfiguration { Output = output, Error = error });
        return (exitCode, output.ToString(), error.ToString());
    }

    [Fact]
    public async Task JsonListsEveryCandidateAndAWinner()
    {
        var (exitCode, output, error) = await RunAsync("generate", "Compute 3 + 4 * 2 from left to right.", "--model", model.Directory,
            "--n", "4", "--max-new-tokens", "20", "--seed", "7", "--json");
        Assert.True(exitCode == 0, error);

        using var report = JsonDocument.Parse(output);
        var root = report.RootElement;
        var candidates = root.GetProperty("candidates").EnumerateArray().ToList();
        Assert.Equal(4, candidates.Count);
        Assert.Equal([0, 1, 2, 3], candidates.Select(c => c.GetProperty("index").GetInt32()));
        Assert.Equal([7L, 8L, 9L, 10L], candidates.Select(c => c.GetProperty("seed").GetInt64()));
        foreach (var c in candidates)
        {
            Assert.InRange(c.GetProperty("responseTokens").GetInt32(), 1, 20);
            Assert.Contains(c.GetProperty("finishReason").GetString(), new[] { "stop", "length" });
            Assert.InRange(c.GetProperty("score").GetDouble(), 0.0, 1.0);
            Assert.All(c.GetProperty("stepScores").EnumerateArray(), s => Assert.InRange(s.GetDouble(), 0.0, 1.0));
            Assert.Equal(JsonValueKind.String, c.GetProperty("preview").ValueKind);
        }
        int winner = root.GetProperty("winnerIndex").GetInt32();
        Assert.InRange(winner, 0, 3);
        Assert.Equal(winner, root.GetProperty("winner").GetProperty("index").GetInt32());
        // Best-of-N: the winner has the highest trajectory score.
        Assert.Equal(candidates.Max(c => c.GetProperty("score").GetDouble()), root.GetProperty("winner").GetProperty("score").GetDouble());
        Assert.Equal(JsonValueKind.String, root.GetProperty("winner").GetProperty("text").ValueKind);
        Assert.Equal("bon", root.GetProperty("selection").GetString());
        Assert.Equal("float32", root.GetProperty("dtype").GetString());
    }

    [Fact]
    public async Task TextOutputShowsCandidatesAndTheWinner()
    {
        var (exitCode, output, error) = await RunAsync("generate", "Compute 1 + 2 from left to right.", "--model", model.Directory,
            "--n", "2", "--max-new-tokens", "8", "--select", "majority", "--aggregate", "min");
        Assert.True(exitCode == 0, error);
        Assert.Contains("#0 ", output);
        Assert.Contains("#1 ", output);
        Assert.Contains("winner: #", output);
    }

    [Theory]
    [InlineData("0", "k must be between 1 and 256")]
    [InlineData("257", "k must be between 1 and 256")]
    public async Task CandidateCountOutOfRangeIsAUsageError(string n, string message)
    {
        var (exitCode, output, error) = await RunAsync("generate", "Compute 1 + 2.", "--model", model.Directory, "--n", n);
        AssertUsageError(exitCode, output, error, message);
    }

    [Fact]
    public async Task EmptyPromptIsAUsageError()
    {
        var (exitCode, output, error) = await RunAsync("generate", "  ", "--model", model.Directory);
        AssertUsageError(exitCode, output, error, "the prompt is empty");
    }

    [Fact]
    public async Task MissingModelDirectoryIsAUsageError()
    {
        var missing = Path.Combine(Path.GetTempPath(), "metastone-no-such-model-" + Guid.NewGuid().ToString("N"));
        var (exitCode, output, error) = await RunAsync("generate", "Compute 1 + 2.", "--model", missing);
        AssertUsageError(exitCode, output, error, "model directory not found");
    }

    [Fact]
    public async Task MalformedModelDirectoryIsAUsageError()
    {
        var broken = Path.Combine(Path.GetTempPath(), "metastone-broken-model-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(broken);
        try
        {
            File.WriteAllText(Path.Combine(broken, "config.json"), "{ not json");
            var (exitCode, output, error) = await RunAsync("generate", "Compute 1 + 2.", "--model", broken);
            AssertUsageError(exitCode, output, error, "cannot load the model");

            // Valid config and tokenizer but no weights.
            File.Copy(Path.Combine(model.Directory, "config.json"), Path.Combine(broken, "config.json"), overwrite: true);
            foreach (var name in new[] { "tokenizer.json", "tokenizer_config.json" })
                File.Copy(Path.Combine(model.Directory, name), Path.Combine(broken, name));
            (exitCode, output, error) = await RunAsync("generate", "Compute 1 + 2.", "--model", broken);
            AssertUsageError(exitCode, output, error, "cannot load the model");
        }
        finally
        {
            Directory.Delete(broken, recursive: true);
        }
    }

    [Fact]
    public async Task PromptLongerThanTheContextIsAUsageError()
    {
        // The fixture's context window is 256 positions; every digit is its own token.
        var prompt = "Compute " + string.Join(" + ", Enumerable.Repeat("12345", 100)) + ".";
        var (exitCode, output, error) = await RunAsync("generate", prompt, "--model", model.Directory, "--n", "2");
        AssertUsageError(exitCode, output, error, "context window is 256 tokens");
    }

    [Fact]
    public void DefaultModelMissingSaysTheTinyModelIsNotTrainedYet()
    {
        var root = Path.Combine(Path.GetTempPath(), "metastone-fake-repo-" + Guid.NewGuid().ToString("N"));
        var nested = Path.Combine(root, "src", "deep");
        Directory.CreateDirectory(nested);
        try
        {
            File.WriteAllText(Path.Combine(root, ModelDirectoryResolver.SolutionFileName), "");
            Assert.Equal(root, ModelDirectoryResolver.FindRepositoryRoot([nested]));
            var (directory, problem) = ModelDirectoryResolver.ResolveDefault(root);
            Assert.Null(directory);
            Assert.Contains("not trained yet", problem);
            Assert.Contains("--model", problem);

            Directory.CreateDirectory(Path.Combine(root, "models", "metastone-tiny"));
            Assert.Equal(Path.Combine(root, "models", "metastone-tiny"), ModelDirectoryResolver.ResolveDefault(root).Directory);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public async Task CancellationStopsGenerationCleanly()
    {
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Commands.GenerateCommand.RunAsync(
            new Commands.GenerateSettings { Prompt = "Compute 1 + 2.", ModelDirectory = model.Directory, Candidates = 2 }, cancelled.Token));
    }

    private static void AssertUsageError(int exitCode, string output, string error, string message)
    {
        Assert.Equal(2, exitCode);
        Assert.Equal("", output);
        Assert.Contains(message, error);
        Assert.DoesNotContain("   at ", error); // no stack trace
    }
}
