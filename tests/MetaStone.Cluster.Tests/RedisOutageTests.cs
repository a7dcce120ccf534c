using System.Diagnostics;
using MetaStone.Client;
using MetaStone.Cluster.Tests.Infrastructure;
using MetaStone.Contracts;
using MetaStone.Grains.Durability;
using StackExchange.Redis;
using Xunit.Abstractions;

namespace MetaStone.Cluster.Tests;

/// <summary>
/// Issue 11 item 2: a Redis outage longer than StackExchange.Redis' 5 s backlog timeout used to fail running jobs
/// ("message timed out in the backlog", 29 of 32 candidates stored, no result) although AOF kept every write. Now
/// every store operation rides out an outage of up to the silo's tolerance (60 s by default).
/// Real processes: a redis-server with an append-only file is killed with -9 mid-job and restarted 10 s later.
/// </summary>
public sealed class RedisOutageTests(ITestOutputHelper output)
{
    [Fact]
    public async Task AHighEffortJobSurvivesRedisKilledForTenSecondsAndNothingIsLost()
    {
        await using var redis = await RedisServer.StartAsync(appendOnly: true);
        string clusterId = "outage-" + Guid.NewGuid().ToString("N")[..8];
        await using var a = await SiloProcess.StartAsync("outage-a", redis.ConnectionString, clusterId);
        await using var b = await SiloProcess.StartAsync("outage-b", redis.ConnectionString, clusterId);
        await using var client = await MetaStoneClient.ConnectAsync(new ClusterConnection(redis.ConnectionString, clusterId, clusterId));
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while ((await client.GetReplicasAsync()).Count < 2 && DateTime.UtcNow < deadline) await Task.Delay(200);

        // Long enough that the job is still running across the outage: 32 candidates of up to 200 tokens, 8 slots a silo.
        var request = new JobRequest { Prompt = TestModel.Prompt(11), Effort = ReasoningEffort.High, Sampling = new() { MaxNewTokens = 200, Temperature = 1.0 }, Seed = 11_000 };
        string jobId = await client.SubmitAsync(request);
        using (var first = new CancellationTokenSource(TimeSpan.FromMinutes(2)))
            while ((await client.GetStatusAsync(jobId, first.Token)).Finished < 1) await Task.Delay(100, first.Token);
        var before = await client.GetStatusAsync(jobId);
        Assert.Equal(JobState.Running, before.State);

        redis.KillHard();
        var clock = Stopwatch.StartNew();
        output.WriteLine($"redis killed with {before.Finished}/32 candidates done");
        await Task.Delay(TimeSpan.FromSeconds(10));
        await redis.RestartAsync();
        output.WriteLine($"redis back after {clock.Elapsed.TotalSeconds:F1} s");

        using var patience = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var result = await client.AwaitResultAsync(jobId, patience.Token);
        output.WriteLine($"job completed {clock.Elapsed.TotalSeconds:F1} s after the kill");
        output.WriteLine($"store operations that waited out the outage: {(a.Output + "\n" + b.Output).Split('\n').Count(l => l.Contains("Redis unavailable", StringComparison.Ordinal))} retries logged");
        Assert.Equal(32, result.Candidates.Count);
        Assert.Equal(Enumerable.Range(0, 32), result.Candidates.Select(c => c.Index).Order());

        // Nothing lost: the persisted record is complete (read by a fresh activation, after every silo dropped its grains).
        await client.Grains.GetGrain<Orleans.Runtime.IManagementGrain>(0).ForceActivationCollection(TimeSpan.Zero);
        var stored = await client.GetResultAsync(jobId);
        Assert.NotNull(stored);
        Assert.Equal(JobState.Completed, (await client.GetStatusAsync(jobId)).State);
        Assert.Equal(32, stored!.Candidates.Count);
        Assert.False(a.HasExited, a.Output);
        Assert.False(b.HasExited, b.Output);

        // The cluster keeps serving after the outage.
        using var again = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var next = await client.RunAsync(new JobRequest { Prompt = TestModel.Prompt(12), Effort = ReasoningEffort.Low, Sampling = new() { MaxNewTokens = 16 }, Seed = 12 }, again.Token);
        Assert.Equal(2, next.Candidates.Count);
    }

    /// <summary>
    /// Orleans' Redis grain storage wraps the client's errors in its own exception: the outage policy must still see a Redis
    /// outage through the wrapper (or a state write during an outage would fail at once instead of waiting it out), and must
    /// not mistake a real error for one.
    /// </summary>
    [Fact]
    public void TheOutagePolicySeesARedisOutageThroughTheStorageProvidersWrapper()
    {
        var lost = new RedisConnectionException(ConnectionFailureType.SocketFailure, "socket closed");
        Assert.True(RedisOutagePolicy.IsOutage(lost));
        Assert.True(RedisOutagePolicy.IsOutage(new Orleans.Persistence.Redis.RedisStorageException("write failed", lost)));
        Assert.True(RedisOutagePolicy.IsOutage(new Orleans.Persistence.Redis.RedisStorageException("write failed", new RedisServerException("LOADING Redis is loading the dataset in memory"))));
        // What Orleans 10.4 really throws: the client's exception only in the message, wrapped once more by the runtime.
        var written = new Orleans.Persistence.Redis.RedisStorageException("Failed to write grain state for job grain with ID coordinator/x and storage key s/state/coordinator/x/job. "
            + "StackExchange.Redis.RedisConnectionException: The message timed out in the backlog attempting to send because no connection became available (5000ms)");
        Assert.True(RedisOutagePolicy.IsOutage(written));
        Assert.True(RedisOutagePolicy.IsOutage(new Orleans.Runtime.OrleansException("Error from storage provider RedisGrainStorage.job during WriteStateAsync for grain coordinator/x\n"
            + "Exc level 0: " + written.GetType().FullName + ": " + written.Message, written)));
        Assert.False(RedisOutagePolicy.IsOutage(new Orleans.Persistence.Redis.RedisStorageException("bad state")));
        Assert.False(RedisOutagePolicy.IsOutage(new Orleans.Runtime.OrleansException("Error from storage provider RedisGrainStorage.job during WriteStateAsync: InconsistentStateException")));
        Assert.False(RedisOutagePolicy.IsOutage(new Orleans.Storage.InconsistentStateException("etag mismatch")));
    }
}
