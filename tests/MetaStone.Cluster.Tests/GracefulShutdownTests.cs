using System.Diagnostics;
using System.Text.Json;
using MetaStone.Client;
using MetaStone.Cluster.Tests.Infrastructure;
using MetaStone.Contracts;
using Xunit.Abstractions;

namespace MetaStone.Cluster.Tests;

/// <summary>
/// Issue 11 item 4: a silo must stop gracefully on SIGTERM (docker stop) and SIGINT (Ctrl+C): take no new candidates,
/// let in-flight ones finish within the grace period, leave membership, exit 0 — and the job it was serving completes.
/// Before: the silo executable's host stopped without draining; <c>metastone silo</c> ignored both signals entirely.
/// A cluster of its own (a real redis-server and two real silo processes), so the shared process cluster keeps three.
/// </summary>
public sealed class GracefulShutdownTests(ITestOutputHelper output)
{
    private const int GraceSeconds = 60;

    [Theory]
    [InlineData(SiloProcess.SIGTERM)]
    [InlineData(SiloProcess.SIGINT)]
    public async Task ASignalledSiloFinishesItsCandidatesLeavesTheClusterAndExitsZero(int signal)
    {
        await using var redis = await RedisServer.StartAsync();
        string clusterId = "grace-" + Guid.NewGuid().ToString("N")[..8];
        var extra = new Dictionary<string, string> { ["MetaStone__ShutdownGraceSeconds"] = GraceSeconds.ToString() };
        await using var a = await SiloProcess.StartAsync("grace-a", redis.ConnectionString, clusterId, extra);
        await using var b = await SiloProcess.StartAsync("grace-b", redis.ConnectionString, clusterId, extra);
        await using var client = await MetaStoneClient.ConnectAsync(new ClusterConnection(redis.ConnectionString, clusterId, clusterId));
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while ((await client.GetReplicasAsync()).Count < 2 && DateTime.UtcNow < deadline) await Task.Delay(100);
        Assert.Equal(2, (await client.GetReplicasAsync()).Count);

        string jobId = await client.SubmitAsync(new JobRequest { Prompt = TestModel.Prompt(7), K = 32, Sampling = new() { MaxNewTokens = 200, Temperature = 1.0 }, Seed = 7000 });
        var coordinator = (await client.GetStatusAsync(jobId)).CoordinatorSilo;
        var victim = coordinator == a.Name ? b : a; // the job's candidates must complete elsewhere / on the victim before it leaves
        deadline = DateTime.UtcNow.AddSeconds(60);
        while (!(await client.GetReplicasAsync()).Any(r => r.Replica.StartsWith(victim.Name + "/", StringComparison.Ordinal) && r.Busy > 0) && DateTime.UtcNow < deadline)
            await Task.Delay(20);
        int busy = (await client.GetReplicasAsync()).Where(r => r.Replica.StartsWith(victim.Name + "/", StringComparison.Ordinal)).Sum(r => r.Busy);
        Assert.True(busy > 0, $"{victim.Name} never got candidates");

        var clock = Stopwatch.StartNew();
        victim.Signal(signal);
        await victim.WaitForExitAsync(TimeSpan.FromSeconds(GraceSeconds + 45));
        output.WriteLine($"signal {signal} to {victim.Name} with {busy} sequences busy: exited with {victim.ExitCode} after {clock.ElapsedMilliseconds} ms");
        output.WriteLine(victim.Output);
        Assert.Equal(0, victim.ExitCode);
        Assert.Contains("taking no new candidates", victim.Output);
        Assert.Contains($"metastone silo {victim.Name} stopped", victim.Output);
        Assert.DoesNotContain("Unhandled exception", victim.Output);

        // It left membership itself: its row is Dead at once (no failure detection involved).
        var members = await redis.Connection.GetDatabase().HashGetAllAsync($"{clusterId}/members/{clusterId}");
        var row = members.Select(m => m.Value.ToString()).Where(v => v.StartsWith('{'))
            .Select(v => JsonDocument.Parse(v).RootElement).Single(e => e.GetProperty("SiloName").GetString() == victim.Name);
        Assert.Equal(6, row.GetProperty("Status").GetInt32()); // SiloStatus.Dead

        using var patience = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var result = await client.AwaitResultAsync(jobId, patience.Token);
        Assert.Equal(Enumerable.Range(0, 32), result.Candidates.Select(c => c.Index).Order());
        Assert.All(result.Candidates, c => Assert.Equal(7000 + c.Index, c.Seed));
        int finishedOnVictim = result.Candidates.Count(c => c.Replica.StartsWith(victim.Name + "/", StringComparison.Ordinal));
        output.WriteLine($"job completed; {finishedOnVictim} candidates were finished by {victim.Name} while it drained");
        Assert.True(finishedOnVictim > 0, "the draining silo finished its in-flight candidates");
        Assert.False(a == victim ? b.HasExited : a.HasExited, "the other silo kept running");
    }

    /// <summary>The verb the issue tried: <c>metastone silo</c> was still up 50 s after SIGTERM (and after Ctrl+C).</summary>
    [Theory]
    [InlineData(SiloProcess.SIGTERM)]
    [InlineData(SiloProcess.SIGINT)]
    public async Task MetastoneSiloVerbStopsOnASignalAndExitsZero(int signal)
    {
        await using var redis = await RedisServer.StartAsync();
        string clusterId = "grace-cli-" + Guid.NewGuid().ToString("N")[..8];
        await using var silo = await SiloProcess.StartCliAsync("grace-cli", redis.ConnectionString, clusterId, FreePorts.Next(), FreePorts.Next(), "--shutdown-grace", "20");
        var clock = Stopwatch.StartNew();
        silo.Signal(signal);
        try { await silo.WaitForExitAsync(TimeSpan.FromSeconds(45)); }
        catch (TimeoutException) { Assert.Fail($"metastone silo was still running {clock.Elapsed.TotalSeconds:0} s after signal {signal}:\n{silo.Output}"); }
        output.WriteLine($"signal {signal}: metastone silo exited with {silo.ExitCode} after {clock.ElapsedMilliseconds} ms");
        Assert.Equal(0, silo.ExitCode);
        Assert.Contains("metastone silo grace-cli stopped", silo.Output);
    }
}
