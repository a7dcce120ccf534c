using MetaStone.Client;
using MetaStone.Cluster.Tests.Infrastructure;
using MetaStone.Contracts;
using StackExchange.Redis;
using Xunit.Abstractions;

namespace MetaStone.Cluster.Tests;

/// <summary>
/// Issue 11 item 3: a Redis without persistence that restarts loses the membership table. Silos used to log
/// "Failed to update table entry … bad argument #1 to 'find'" every 30 s forever, never re-register and never exit.
/// Now a silo whose row is gone says so and exits with code 3 (a supervisor restarts it), and a silo started
/// afterwards serves a resubmitted job. The data loss of such a restart is made with FLUSHALL on a real redis-server.
/// </summary>
public sealed class RedisLossTests(ITestOutputHelper output)
{
    [Fact]
    public async Task ASiloWhoseMembershipTableIsLostExitsClearlyAndANewSiloServesAResubmittedJob()
    {
        await using var redis = await RedisServer.StartAsync();
        string clusterId = "loss-" + Guid.NewGuid().ToString("N")[..8];
        await using var first = await SiloProcess.StartAsync("loss-a", redis.ConnectionString, clusterId);
        var table = $"{clusterId}/members/{clusterId}";
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!(await redis.Connection.GetDatabase().HashGetAllAsync(table)).Any(e => e.Value.ToString().Contains("loss-a", StringComparison.Ordinal))
               && DateTime.UtcNow < deadline)
            await Task.Delay(200);
        await Task.Delay(TimeSpan.FromSeconds(3)); // the watchdog has seen its row

        await using (var admin = await ConnectionMultiplexer.ConnectAsync($"{redis.ConnectionString},allowAdmin=true"))
            await admin.GetServers()[0].FlushAllDatabasesAsync();

        try { await first.WaitForExitAsync(TimeSpan.FromSeconds(60)); }
        catch (TimeoutException) { Assert.Fail($"the silo was still running 60 s after its membership table was lost:\n{first.Output}"); }
        output.WriteLine(first.Output);
        Assert.Equal(3, first.ExitCode);
        Assert.Contains("cluster membership in Redis was lost", first.Output);

        // Restarted (as a supervisor would), a silo registers in the new table and a resubmitted job completes.
        await using var second = await SiloProcess.StartAsync("loss-a", redis.ConnectionString, clusterId);
        await using var client = await MetaStoneClient.ConnectAsync(new ClusterConnection(redis.ConnectionString, clusterId, clusterId));
        using var patience = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var result = await client.RunAsync(new JobRequest { Prompt = TestModel.Prompt(5), Effort = ReasoningEffort.Low, Sampling = new() { MaxNewTokens = 16 }, Seed = 5 }, patience.Token);
        Assert.Equal(2, result.Candidates.Count);
        Assert.False(second.HasExited);
    }
}
