using System.Diagnostics;
using MetaStone.Client;
using MetaStone.Cluster.Tests.Infrastructure;
using MetaStone.Contracts;
using MetaStone.Grains.Jobs;
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
        var env = new Dictionary<string, string> { ["MetaStone__MaxBatch"] = "16" };
        await using var a = await SiloProcess.StartAsync("load-a", redis.ConnectionString, clusterId, env);
        await using var b = await SiloProcess.StartAsync("load-b", redis.ConnectionString, clusterId, env);
        var connection = new ClusterConnection(redis.ConnectionString, clusterId, clusterId);
        var clients = new List<MetaStoneClient>();
        try
        {
            for (int c = 0; c < Clients; c++) clients.Add(await MetaStoneClient.ConnectAsync(connection));
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while ((await clients[0].GetReplicasAsync()).Count < 2 && DateTime.UtcNow < deadline) await Task.Delay(100);

            using var patience = new CancellationTokenSource(TimeSpan.FromMinutes(9)); // under test.sh's 10-minute blame-hang limit
            var clock = Stopwatch.StartNew();
            var jobs = Enumerable.Range(0, Clients * JobsPerClient).Select(async j =>
            {
                var client = clients[j % Clients];
                var started = clock.Elapsed;
                try
                {
                    var result = await client.RunAsync(new JobRequest
                    {
                        Prompt = TestModel.Prompt(j), K = K, ThinkingBudget = 200, MaxNewTokens = 512, Temperature = 1.0, Seed = 1000 * j,
                    }, patience.Token);
                    return (Job: j, Latency: clock.Elapsed - started, Result: (JobResult?)result, Error: (Exception?)null);
                }
                catch (Exception e) { return (Job: j, Latency: clock.Elapsed - started, Result: (JobResult?)null, Error: (Exception?)e); }
            }).ToList();
            var outcomes = await Task.WhenAll(jobs);
            clock.Stop();

            var failed = outcomes.Where(o => o.Error is not null).ToList();
            var latencies = outcomes.Select(o => o.Latency.TotalSeconds).Order().ToArray();
            output.WriteLine($"{outcomes.Length} jobs × k = {K} from {Clients} clients in {clock.Elapsed.TotalSeconds:F1} s: " +
                $"{outcomes.Length / clock.Elapsed.TotalSeconds:F2} jobs/s, p50 {latencies[latencies.Length / 2]:F1} s, " +
                $"p99 {latencies[(int)Math.Ceiling(latencies.Length * 0.99) - 1]:F1} s, failed {failed.Count}");
            Assert.True(failed.Count == 0, "failed jobs: " + string.Join("; ", failed.Select(f => $"{f.Job}: {f.Error!.Message}")));
            Assert.All(outcomes, o => Assert.Equal(Enumerable.Range(0, K), o.Result!.Candidates.Select(c => c.Index).Order()));

            // Nothing lost: every job is stored as completed and none is left running.
            var store = new RedisJobStore(redis.Connection, clusterId, TimeSpan.FromDays(1));
            foreach (var o in outcomes) Assert.Equal(JobState.Completed, (await store.LoadAsync(o.Result!.JobId))!.State);
            Assert.Empty(await store.RunningJobsAsync());
            foreach (var silo in new[] { a, b })
            {
                Assert.False(silo.HasExited, $"{silo.Name} exited");
                Assert.DoesNotContain("Scalar.h", silo.Output);
                Assert.DoesNotContain("toFloat", silo.Output);
            }
        }
        finally
        {
            foreach (var client in clients) await client.DisposeAsync();
        }
    }
}
