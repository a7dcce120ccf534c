using System.Diagnostics;
using MetaStone.Client;
using MetaStone.Cluster.Tests.Infrastructure;
using MetaStone.Contracts;
using MetaStone.Grains.Jobs;
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
        var request = new JobRequest { Prompt = TestModel.Prompt(11), Effort = "high", MaxNewTokens = 200, Temperature = 1.0, Seed = 11_000 };
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

        // Nothing lost: the stored record is complete and every candidate is in Redis.
        var stored = await new RedisJobStore(redis.Connection, clusterId, TimeSpan.FromDays(7)).LoadAsync(jobId);
        Assert.NotNull(stored);
        Assert.Equal(JobState.Completed, stored!.State);
        Assert.Equal(32, stored.Candidates.Count);
        Assert.False(a.HasExited, a.Output);
        Assert.False(b.HasExited, b.Output);

        // The cluster keeps serving after the outage.
        using var again = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var next = await client.RunAsync(new JobRequest { Prompt = TestModel.Prompt(12), Effort = "low", MaxNewTokens = 16, Seed = 12 }, again.Token);
        Assert.Equal(2, next.Candidates.Count);
    }

    /// <summary>
    /// The store itself, deterministically: a candidate write issued while Redis is down completes once Redis is back
    /// (8 s later, beyond the client's 5 s backlog timeout); without the outage policy (tolerance 0, the old behaviour)
    /// the same write fails with the library's backlog timeout. Nothing written before the outage is lost (AOF).
    /// </summary>
    [Fact]
    public async Task ACandidateWriteIssuedDuringAnOutageLandsOnceRedisIsBack()
    {
        await using var redis = await RedisServer.StartAsync(appendOnly: true);
        string service = "store-" + Guid.NewGuid().ToString("N")[..8];
        var patient = new RedisJobStore(redis.Connection, service, TimeSpan.FromDays(7), new RedisOutagePolicy(TimeSpan.FromSeconds(60)));
        var impatient = new RedisJobStore(redis.Connection, service, TimeSpan.FromDays(7), new RedisOutagePolicy(TimeSpan.Zero));
        var request = new JobRequest { Prompt = "p", Effort = "low" };
        Assert.Equal(CreateOutcome.Created, await patient.CreateAsync("job-1", request, 2, DateTimeOffset.UtcNow));
        await patient.SaveCandidateAsync("job-1", Candidate(0));

        redis.KillHard();
        var clock = Stopwatch.StartNew();
        var before = await Record.ExceptionAsync(() => impatient.SaveCandidateAsync("job-1", Candidate(9)));
        output.WriteLine($"without the policy: {before?.GetType().Name} after {clock.Elapsed.TotalSeconds:F1} s: {before?.Message.Split(" - ")[0]}");
        Assert.True(before is RedisConnectionException or RedisTimeoutException, before?.ToString() ?? "no failure");

        var write = patient.SaveCandidateAsync("job-1", Candidate(1));
        await Task.Delay(TimeSpan.FromSeconds(8) - clock.Elapsed > TimeSpan.Zero ? TimeSpan.FromSeconds(8) - clock.Elapsed : TimeSpan.Zero);
        Assert.False(write.IsCompleted, "the write should still be waiting for Redis");
        await redis.RestartAsync();
        await write.WaitAsync(TimeSpan.FromSeconds(60));
        output.WriteLine($"with the policy: the write landed {clock.Elapsed.TotalSeconds:F1} s after the kill");

        var stored = await patient.LoadAsync("job-1");
        Assert.NotNull(stored);
        Assert.Equal([0, 1], stored!.Candidates.Keys.Order());
        Assert.Contains("job-1", await patient.RunningJobsAsync());
    }

    private static CandidateResult Candidate(int index) => new()
    {
        Index = index, Seed = index, Text = $"candidate {index}", Answer = "1", PromptTokens = 1, ResponseTokens = 2, ThinkingTokens = 1, AnswerTokens = 1,
        StepScores = [0.5], Score = 0.5, FinishReason = "stop", Replica = "r",
    };
}
