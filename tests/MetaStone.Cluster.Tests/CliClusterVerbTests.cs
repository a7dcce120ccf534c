using System.CommandLine;
using System.Text.Json;
using MetaStone.Cli;
using MetaStone.Cluster.Tests.Infrastructure;

namespace MetaStone.Cluster.Tests;

/// <summary>The <c>metastone</c> cluster verbs end to end: embedded ask, and submit / status / result / cancel against real silos.</summary>
[Collection(ProcessClusterCollection.Name)]
public sealed class CliClusterVerbTests(ProcessClusterFixture cluster)
{
    private static async Task<(int ExitCode, string Output)> RunAsync(params string[] args)
    {
        using var output = new StringWriter();
        int code = await CliRootCommand.Create().Parse(args).InvokeAsync(new InvocationConfiguration { Output = output });
        return (code, output.ToString());
    }

    [Fact]
    public async Task AskWithoutAClusterRunsAnEmbeddedSiloAndPrintsTheWinner()
    {
        var (code, output) = await RunAsync("ask", TestModel.Prompt(), "--model", TestModel.Directory, "--k", "4", "--max-new-tokens", "8", "--json");
        Assert.Equal(0, code);
        using var json = JsonDocument.Parse(output);
        var candidates = json.RootElement.GetProperty("candidates").EnumerateArray().ToList();
        Assert.Equal(4, candidates.Count);
        int winner = json.RootElement.GetProperty("winnerIndex").GetInt32();
        Assert.Equal(candidates.Max(c => c.GetProperty("score").GetDouble()), candidates[winner].GetProperty("score").GetDouble());

        var (text, table) = await RunAsync("ask", TestModel.Prompt(), "--model", TestModel.Directory, "--effort", "low", "--max-new-tokens", "8");
        Assert.Equal(0, text);
        Assert.Contains("answer:", table);
        Assert.Contains("   #        seed   score", table);
    }

    [Fact]
    public async Task BadAskArgumentsExitWithCode2()
    {
        Assert.Equal(2, (await RunAsync("ask", TestModel.Prompt(), "--model", TestModel.Directory, "--k", "0")).ExitCode);
        Assert.Equal(2, (await RunAsync("ask", TestModel.Prompt(), "--model", TestModel.Directory, "--effort", "extreme")).ExitCode);
        Assert.Equal(2, (await RunAsync("ask", "hello", "--model", "/nonexistent/model")).ExitCode);
        Assert.Equal(2, (await RunAsync("status", "some-job")).ExitCode); // no cluster named

        // With --json the error is the JSON document on stdout too (exit code per the one scheme, ExitCodes).
        var (code, json) = await RunAsync("ask", "hello", "--effort", "extreme", "--json");
        Assert.Equal(ExitCodes.BadInput, code);
        using var error = JsonDocument.Parse(json);
        Assert.Equal(2, error.RootElement.GetProperty("error").GetProperty("exitCode").GetInt32());
        Assert.Contains("unknown effort 'extreme'", error.RootElement.GetProperty("error").GetProperty("message").GetString());
    }

    /// <summary>The real CLI process (stdin and stderr are its own), with a deadline.</summary>
    private static async Task<(int ExitCode, string Stdout, string Stderr)> RunProcessAsync(string? stdin, params string[] args)
    {
        var info = new System.Diagnostics.ProcessStartInfo("dotnet")
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        info.ArgumentList.Add(SiloProcess.CliDll());
        foreach (var a in args) info.ArgumentList.Add(a);
        info.Environment["DOTNET_gcServer"] = "0";
        using var process = System.Diagnostics.Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (stdin is not null) await process.StandardInput.WriteAsync(stdin);
        process.StandardInput.Close();
        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        try { await process.WaitForExitAsync(deadline.Token); }
        catch (OperationCanceledException) { process.Kill(); throw new TimeoutException($"metastone {string.Join(' ', args)} did not exit within 3 minutes"); }
        return (process.ExitCode, await stdout, await stderr);
    }

    /// <summary>Issue 11: a bad effort used to be reported only after the embedded silo had started (4–8 s); it is checked first now.</summary>
    [Fact]
    public async Task AskChecksTheRequestBeforeStartingAnEmbeddedSilo()
    {
        // The model directory does not exist either: the effort error proves the request was checked before the silo was set up.
        var (code, _, stderr) = await RunProcessAsync(null, "ask", "hello", "--effort", "extreme", "--model", "/nonexistent/model");
        Assert.Equal(2, code);
        Assert.Contains("unknown effort 'extreme'", stderr);
        var (none, _, noPrompt) = await RunProcessAsync(null, "ask", "--k", "2");
        Assert.Equal(2, none);
        Assert.Contains("no question given", noPrompt);
    }

    /// <summary>Long prompts come from a file (<c>--prompt-file</c>) or standard input (<c>-</c>); the trailing newline is not part of the question.</summary>
    [Fact]
    public async Task AskReadsTheQuestionFromAFileOrStandardInput()
    {
        string file = Path.GetTempFileName();
        try
        {
            await File.WriteAllTextAsync(file, TestModel.Prompt(3) + "\n");
            var (code, stdout, stderr) = await RunProcessAsync(null, "ask", "--prompt-file", file, "--model", TestModel.Directory, "--k", "2", "--max-new-tokens", "8", "--json");
            Assert.True(code == 0, stderr);
            using (var json = JsonDocument.Parse(stdout))
            {
                Assert.Equal(TestModel.Prompt(3), json.RootElement.GetProperty("request").GetProperty("prompt").GetString());
                // The request contract's choices print as the words users type.
                Assert.Equal("bon", json.RootElement.GetProperty("selection").GetString());
                Assert.Equal("bon", json.RootElement.GetProperty("request").GetProperty("selection").GetString());
                Assert.Equal(8, json.RootElement.GetProperty("request").GetProperty("sampling").GetProperty("maxNewTokens").GetInt32());
                Assert.All(json.RootElement.GetProperty("candidates").EnumerateArray(),
                    c => Assert.Contains(c.GetProperty("finishReason").GetString(), new[] { "stop", "length" }));
            }

            var (piped, pipedOut, pipedErr) = await RunProcessAsync(TestModel.Prompt(4) + "\n", "ask", "-", "--model", TestModel.Directory, "--effort", "low",
                "--select", "majority", "--max-new-tokens", "8", "--json");
            Assert.True(piped == 0, pipedErr);
            using (var json = JsonDocument.Parse(pipedOut))
            {
                Assert.Equal(TestModel.Prompt(4), json.RootElement.GetProperty("request").GetProperty("prompt").GetString());
                Assert.Equal("low", json.RootElement.GetProperty("request").GetProperty("effort").GetString());
                Assert.Equal("majority", json.RootElement.GetProperty("selection").GetString());
                Assert.Equal(2, json.RootElement.GetProperty("k").GetInt32());
            }
        }
        finally { File.Delete(file); }
    }

    [Fact]
    public async Task SweepDetachWatchAndCancelWorkAgainstACluster()
    {
        string[] where = ["--cluster", cluster.Redis.ConnectionString, "--cluster-id", cluster.ClusterId];
        string report = Path.Combine(Path.GetTempPath(), "metastone-sweep-cli-" + Guid.NewGuid().ToString("N"));
        try
        {
            string id = "cli-" + Guid.NewGuid().ToString("N")[..8];
            var (started, printed) = await RunAsync(["sweep", "--problems", "3", "--k", "1,2", "--budgets", "8,none", "--max-new-tokens", "12",
                "--id", id, "--detach", .. where]);
            Assert.Equal(0, started);
            Assert.Equal(id, printed.Trim());
            var (watched, table) = await RunAsync(["sweep", "--watch", id, "--out", report, .. where]);
            Assert.Equal(0, watched);
            Assert.Contains($"sweep {id}:", table);
            Assert.Equal(1 + 2 * 2 * 5, File.ReadAllLines(Path.Combine(report, "points.csv")).Length);
            Assert.True(File.Exists(Path.Combine(report, "accuracy-vs-compute.png")));

            // A long sweep cancelled from another command: its state says so, and --watch reports it as not completed.
            string longId = "cli-long-" + Guid.NewGuid().ToString("N")[..8];
            Assert.Equal(0, (await RunAsync(["sweep", "--problems", "40", "--k", "32", "--budgets", "200", "--max-new-tokens", "200",
                "--id", longId, "--detach", .. where])).ExitCode);
            Assert.Equal(0, (await RunAsync(["sweep", "--cancel", longId, .. where])).ExitCode);
            Assert.Equal(1, (await RunAsync(["sweep", "--watch", longId, "--out", report + "-long", .. where])).ExitCode);
            Assert.Equal(2, (await RunAsync(["sweep", "--cancel", longId])).ExitCode); // no cluster named
        }
        finally
        {
            foreach (var d in new[] { report, report + "-long" })
                if (Directory.Exists(d)) Directory.Delete(d, recursive: true);
        }
    }

    [Fact]
    public async Task SubmitStatusResultAndCancelWorkAgainstACluster()
    {
        string[] where = ["--cluster", cluster.Redis.ConnectionString, "--cluster-id", cluster.ClusterId];
        var (submitted, id) = await RunAsync(["submit", TestModel.Prompt(9), "--effort", "low", "--max-new-tokens", "8", .. where]);
        Assert.Equal(0, submitted);
        string jobId = id.Trim();
        var (waited, resultJson) = await RunAsync(["result", jobId, "--wait", "--json", .. where]);
        Assert.Equal(0, waited);
        using (var result = JsonDocument.Parse(resultJson))
            Assert.Equal(2, result.RootElement.GetProperty("candidates").GetArrayLength());
        var (statusCode, status) = await RunAsync(["status", jobId, "--json", .. where]);
        Assert.Equal(0, statusCode);
        using (var s = JsonDocument.Parse(status)) Assert.Equal("completed", s.RootElement.GetProperty("state").GetString());

        var (_, longId) = await RunAsync(["submit", TestModel.Prompt(10), "--effort", "high", "--max-new-tokens", "200", .. where]);
        var (cancelCode, cancelled) = await RunAsync(["cancel", longId.Trim(), "--json", .. where]);
        Assert.Equal(0, cancelCode);
        using (var c = JsonDocument.Parse(cancelled)) Assert.Equal("cancelled", c.RootElement.GetProperty("state").GetString());

        Assert.Equal(1, (await RunAsync(["status", "no-such-job", .. where])).ExitCode);
    }
}
