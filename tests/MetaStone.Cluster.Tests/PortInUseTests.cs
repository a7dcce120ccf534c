using System.Text.Json;
using MetaStone.Client;
using MetaStone.Cluster.Tests.Infrastructure;
using MetaStone.Contracts;
using Xunit.Abstractions;

namespace MetaStone.Cluster.Tests;

/// <summary>
/// Issue 11 item 5: starting a silo on a port that is in use must refuse with "port N in use" and never touch the silo
/// already listening there. Before: the newcomer joined with the same endpoint and membership declared the running
/// silo (the older generation) dead. Real redis-server and silo processes on loopback.
/// </summary>
public sealed class PortInUseTests(ITestOutputHelper output)
{
    [Fact]
    public async Task ASiloOnABusyPortIsRefusedAndTheRunningSiloKeepsServing()
    {
        await using var redis = await RedisServer.StartAsync();
        string clusterId = "ports-" + Guid.NewGuid().ToString("N")[..8];
        int siloPort = FreePorts.Next(), gatewayPort = FreePorts.Next();
        await using var running = await SiloProcess.StartAsync("ports-a", redis.ConnectionString, clusterId, siloPort, gatewayPort);

        await using (var sameSiloPort = await SiloProcess.StartAsync("ports-b", redis.ConnectionString, clusterId, siloPort, FreePorts.Next(), waitReady: false))
        {
            await sameSiloPort.WaitForExitAsync(TimeSpan.FromSeconds(90));
            output.WriteLine(sameSiloPort.Output);
            Assert.Equal(2, sameSiloPort.ExitCode);
            Assert.Contains($"port {siloPort} in use", sameSiloPort.Output);
        }
        await using (var sameGatewayPort = await SiloProcess.StartAsync("ports-c", redis.ConnectionString, clusterId, FreePorts.Next(), gatewayPort, waitReady: false))
        {
            await sameGatewayPort.WaitForExitAsync(TimeSpan.FromSeconds(90));
            output.WriteLine(sameGatewayPort.Output);
            Assert.Equal(2, sameGatewayPort.ExitCode);
            Assert.Contains($"port {gatewayPort} in use", sameGatewayPort.Output);
        }

        // Long enough for fast failure detection (about 2 s) to have declared the running silo dead, had anything suspected it.
        await Task.Delay(TimeSpan.FromSeconds(6));
        Assert.False(running.HasExited, $"the running silo exited:\n{running.Output}");
        var members = await redis.Connection.GetDatabase().HashGetAllAsync($"{clusterId}/members/{clusterId}");
        var rows = members.Select(m => m.Value.ToString()).Where(v => v.StartsWith('{')).Select(v => JsonDocument.Parse(v).RootElement).ToList();
        Assert.Equal(3, rows.Single(r => r.GetProperty("SiloName").GetString() == "ports-a").GetProperty("Status").GetInt32()); // Active
        Assert.DoesNotContain(rows, r => r.GetProperty("SiloName").GetString() != "ports-a"); // the refused ones never joined

        await using var client = await MetaStoneClient.ConnectAsync(new ClusterConnection(redis.ConnectionString, clusterId, clusterId));
        using var patience = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var result = await client.RunAsync(new JobRequest { Prompt = TestModel.Prompt(3), Effort = ReasoningEffort.Low, Sampling = new() { MaxNewTokens = 16 }, Seed = 3 }, patience.Token);
        Assert.Equal(2, result.Candidates.Count);
    }
}
