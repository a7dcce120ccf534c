using MetaStone.Cli.Cluster;
using MetaStone.Bench;
using MetaStone.Client;
using MetaStone.Cluster.Tests.Infrastructure;
using MetaStone.Contracts;
using Xunit.Abstractions;

namespace MetaStone.Cluster.Tests;

/// <summary>
/// Issue 11 item 1 under real load, the issue's own case: two silo processes (real tiny model), 8 clients × 25
/// concurrent k = 8 jobs, thinking budget 200, max 512 new tokens. Every job must complete with all its candidates
/// (0 failed, 0 lost), and no silo may log the native Scalar error. Measured on the 2-core machine: before the fix
/// 191 of 200 jobs failed ("INTERNAL ASSERT FAILED at Scalar.h"), after 0 of 200 (about 70 s, 2.9 jobs/s).
/// </summary>
public sealed class LoadTests(ITestOutputHelper output)
{
    private const int Clients = 8, JobsPerClient = 25, K = 8;

    [Fact]
    public async Task ConcurrentJobsFromSeveralClientsAllCompleteWithNoneFailedOrLost()
    {
        await using var redis = await RedisServer.StartAsync();
        string clusterId = "load-" + Guid.NewGuid().ToString("N")[..8];
        // At the engine's own speed: this is the stress test (the other tests pace the model, see SiloProcess).
        var env = new Dictionary<string, string> { ["MetaStone__MaxBatch"] = "16", ["MetaStone__MinDecodeStepMilliseconds"] = "0" };
        await using var a = await SiloProcess.StartAsync("load-a", redis.ConnectionString, clusterId, env);
        await using var b = await SiloProcess.StartAsync("load-b", redis.ConnectionString, clusterId, env);
        var connection = new ClusterConnection(redis.ConnectionString, clusterId, clusterId);
        await using (var probe = await MetaStoneClient.ConnectAsync(connection))
        {
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while ((await probe.GetReplicasAsync()).Count < 2 && DateTime.UtcNow < deadline) await Task.Delay(100);
        }
        // The same code as `metastone bench load` (LoadBenchmark); 9 minutes: under test.sh's 10-minute blame-hang limit.
        var report = await LoadBenchmark.RunAsync(connection, new LoadSettings
        {
            Clients = Clients, JobsPerClient = JobsPerClient, K = K, ThinkingBudget = 200, MaxNewTokens = 512, Temperature = 1.0,
            Deadline = TimeSpan.FromMinutes(9), Prompt = TestModel.Prompt,
        });
        foreach (var line in report.ToLines()) output.WriteLine(line);
        Assert.True(report.Failed == 0 && report.Lost == 0 && report.Busy == 0, string.Join("\n", report.ToLines()));
        Assert.Equal(Clients * JobsPerClient, report.Completed);
        Assert.Equal(0, report.IncompleteResults);

        // Nothing lost: no job is left running in admission control.
        await using (var probe = await MetaStoneClient.ConnectAsync(connection))
            Assert.Empty((await probe.GetAdmissionAsync()).RunningJobs);
        foreach (var silo in new[] { a, b })
        {
            Assert.False(silo.HasExited, $"{silo.Name} exited");
            Assert.DoesNotContain("Scalar.h", silo.Output);
            Assert.DoesNotContain("toFloat", silo.Output);
        }
    }
}
