using System.Text.Json;
using MetaStone.Cli.Commands;
using MetaStone.Contracts;
using MetaStone.Training.Tasks;

namespace MetaStone.Cli.Tests;

public sealed class SweepCommandTests
{
    private static async Task<(int Exit, string Output)> RunAsync(params string[] args)
    {
        var output = new StringWriter();
        int exit = await CliRootCommand.Create().Parse(args).InvokeAsync(new System.CommandLine.InvocationConfiguration { Output = output, Error = new StringWriter() });
        return (exit, output.ToString());
    }

    [Fact]
    public async Task EmbeddedSweepOnADatasetFileWritesCsvJsonAndRealPngPlots()
    {
        string dir = Path.Combine(Path.GetTempPath(), "metastone-sweep-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string dataset = Path.Combine(dir, "slice.jsonl");
            TaskJsonl.ExportSplit(new ArithmeticChainTask(), "test", 4, 3, dataset);
            string model = Path.Combine(GeneratedModelDirectory.RepoRoot(), "models", "metastone-tiny");
            string report = Path.Combine(dir, "report");
            string[] args = ["sweep", "--dataset", dataset, "--model", model, "--k", "1,2", "--budgets", "16,64",
                "--seeds", "2", "--out", report, "--id", "cli-test", "--state-dir", Path.Combine(dir, "state")];
            var (exit, output) = await RunAsync(args);
            Assert.Equal(0, exit);
            Assert.Contains("fits accuracy = a + b · ln C", output);
            // The shipped model's own parameter count, whatever checkpoint is shipped.
            long parameters;
            using (var loaded = MetaStone.Model.ReflectiveModel.Load(model, new MetaStone.Model.ModelLoadOptions { MaxBatch = 1 }))
                parameters = loaded.Model.parameters().Sum(p => p.numel());
            Assert.Contains($"N = {parameters.ToString("N0", System.Globalization.CultureInfo.InvariantCulture)} policy parameters", output);

            var csv = File.ReadAllLines(Path.Combine(report, "points.csv"));
            Assert.StartsWith("budget,k,method,accuracy", csv[0]);
            Assert.Equal(1 + 2 * 2 * 5, csv.Length); // budgets × k × methods
            Assert.Equal(4 * 2, File.ReadAllLines(Path.Combine(report, "items.jsonl")).Length);
            using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(report, "sweep.json")));
            Assert.Equal(5, json.RootElement.GetProperty("fits").GetArrayLength());
            Assert.StartsWith("C = 2 · N · T", json.RootElement.GetProperty("computeDefinition").GetString());

            foreach (var png in new[] { "accuracy-vs-compute.png", "accuracy-vs-budget.png" })
            {
                byte[] bytes = File.ReadAllBytes(Path.Combine(report, png));
                Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, bytes[..4]);
                // IHDR: width and height, big-endian, at bytes 16–23.
                Assert.Equal(1000, (bytes[16] << 24) | (bytes[17] << 16) | (bytes[18] << 8) | bytes[19]);
                Assert.Equal(620, (bytes[20] << 24) | (bytes[21] << 16) | (bytes[22] << 8) | bytes[23]);
                Assert.True(bytes.Length > 10_000, $"{png} is {bytes.Length} bytes: a blank image?");
            }

            // Running the same command again (a new embedded silo) finds the finished sweep in its state files:
            // the same items come back, none generated again (the file holds exactly one line per item).
            string firstItems = File.ReadAllText(Path.Combine(report, "items.jsonl"));
            var (again, _) = await RunAsync(args);
            Assert.Equal(0, again);
            Assert.Equal(firstItems, File.ReadAllText(Path.Combine(report, "items.jsonl")));
            // The sweep's persisted record (LocalGrainStorage: an ETag line, then the record as JSON) holds its 8 items.
            string record = Assert.Single(Directory.GetFiles(Path.Combine(dir, "state"), "*cli-test*.json"));
            using (var stored = JsonDocument.Parse(File.ReadAllText(record).Split('\n', 2)[1]))
                Assert.Equal(8, stored.RootElement.GetProperty("items").EnumerateObject().Count());

            // The report alone is enough to analyse again, here with k = 1 only and more seeds: no silo is started.
            string redo = Path.Combine(dir, "redo");
            var (reanalysed, table) = await RunAsync("sweep", "--reanalyse", report, "--k", "1", "--seeds", "4", "--out", redo);
            Assert.Equal(0, reanalysed);
            Assert.Equal(1 + 2 * 1 * 5, File.ReadAllLines(Path.Combine(redo, "points.csv")).Length);
            Assert.Contains("4 subsampling seeds", table);
            Assert.Equal(firstItems, File.ReadAllText(Path.Combine(redo, "items.jsonl")));
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    [Theory]
    [InlineData("--k", "1,x", "--k expects comma-separated integers")]
    [InlineData("--budgets", "16,,abc", "--budgets expects comma-separated integers or 'none'")]
    [InlineData("--problems", "0", "--problems must be ≥ 1")]
    public void BadOptionsAreNamed(string option, string value, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => SweepCommand.BuildRequest(null,
            option == "--problems" ? int.Parse(value) : 2, option == "--k" ? value : "1,2", option == "--budgets" ? value : "16", 3, 2, 1, new SamplingSettings { MaxNewTokens = 64 }));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void BudgetsAcceptNoneAndTheDefaultIdFollowsTheSettingsOnly()
    {
        var a = SweepCommand.BuildRequest(null, 3, "1,2,4", "16,none", 5, 4, 1, new SamplingSettings { MaxNewTokens = 64 });
        Assert.Equal(new int?[] { 16, null }, a.Budgets);
        Assert.Equal(4, a.KMax);
        Assert.Equal(3, a.Problems.Count);
        // Concurrency and description do not change what is measured, so they keep the id (re-running resumes).
        Assert.Equal(SweepCommand.DefaultId(a), SweepCommand.DefaultId(a with { MaxConcurrentItems = 9, Description = "x" }));
        Assert.NotEqual(SweepCommand.DefaultId(a), SweepCommand.DefaultId(a with { Seed = 2 }));
        Assert.StartsWith("sweep-", SweepCommand.DefaultId(a));
    }

    [Fact]
    public async Task MissingDatasetAndWatchWithoutClusterFailWithExitCode2()
    {
        Assert.Equal(2, (await RunAsync("sweep", "--dataset", "/nonexistent/x.jsonl")).Exit);
        Assert.Equal(2, (await RunAsync("sweep", "--watch", "sweep-abc")).Exit);
    }
}
