using System.Diagnostics;
using MetaStone.Client;
using MetaStone.Contracts;

namespace MetaStone.Bench;

/// <summary>What <c>metastone bench load</c> sends: <see cref="Clients"/> client connections, each with <see cref="JobsPerClient"/> jobs in flight at once.</summary>
public sealed record LoadSettings
{
    public int Clients { get; init; } = 8;
    public int JobsPerClient { get; init; } = 25;
    public int K { get; init; } = 8;
    public int? ThinkingBudget { get; init; } = 200;
    public int MaxNewTokens { get; init; } = 512;
    public double Temperature { get; init; } = 1.0;
    /// <summary>How long the whole run may take; jobs not ended by then count as lost.</summary>
    public TimeSpan Deadline { get; init; } = TimeSpan.FromMinutes(30);
    /// <summary>The question of job j (default: arithmetic chains that differ per job).</summary>
    public Func<int, string> Prompt { get; init; } = j => $"Compute {10 + j % 90} + 4 * 2 - {j % 7} from left to right.";

    public void Validate()
    {
        if (Clients is < 1 or > 256) throw new ArgumentException($"clients must be 1–256 (got {Clients})");
        if (JobsPerClient is < 1 or > 10_000) throw new ArgumentException($"jobs per client must be 1–10000 (got {JobsPerClient})");
        if (K is < 1 or > 256) throw new ArgumentException($"k must be 1–256 (got {K})");
    }
}

/// <summary>One load run: throughput, latency percentiles, and every job accounted for (completed, failed, refused as busy, or lost).</summary>
public sealed record LoadReport(
    int Clients, int Jobs, int K, double Seconds, double JobsPerSecond, double P50Seconds, double P99Seconds,
    int Completed, int Failed, int Busy, int Lost, int IncompleteResults, IReadOnlyList<string> FailureSamples)
{
    public IEnumerable<string> ToLines()
    {
        yield return $"{Jobs} jobs × k = {K} from {Clients} clients in {Seconds:F1} s: {JobsPerSecond:F2} jobs/s, latency p50 {P50Seconds:F1} s, p99 {P99Seconds:F1} s";
        yield return $"completed {Completed}, failed {Failed}, refused busy {Busy}, lost {Lost}, completed with missing candidates {IncompleteResults}";
        foreach (var f in FailureSamples) yield return "  " + f;
    }
}

/// <summary>
/// Issue 11's load case as a tool: many clients submit concurrently, and every accepted job must end. A job is
/// <i>failed</i> when the cluster says so, <i>busy</i> when admission control refused it (not accepted, so not lost),
/// and <i>lost</i> when it was accepted but the cluster no longer knows it or it never ended before the deadline.
/// </summary>
public static class LoadBenchmark
{
    private enum Outcome { Completed, Failed, Busy, Lost }

    /// <summary>
    /// A cluster on this machine for the run: a private redis-server and <paramref name="silos"/> silo processes with the model, one compute
    /// thread and 16 batch slots each, all owned by <paramref name="group"/> (killed when it is disposed).
    /// </summary>
    public static async Task<ClusterConnection> StartLocalClusterAsync(SiloProcessGroup group, int silos, string modelDirectory, Action<string> log)
    {
        if (silos is < 1 or > 16) throw new ArgumentException($"--silos must be 1–16 (got {silos})");
        string redis = await group.StartRedisAsync();
        string clusterId = $"load-{Guid.NewGuid():N}"[..16];
        log($"starting {silos} silo process(es) with {modelDirectory} and a private redis-server at {redis}…");
        await group.StartSilosAsync(silos, i => new Dictionary<string, string>
        {
            ["MetaStone__Name"] = $"load{i}", ["MetaStone__Model"] = modelDirectory, ["MetaStone__Redis"] = redis,
            ["MetaStone__ClusterId"] = clusterId, ["MetaStone__ServiceId"] = clusterId, ["MetaStone__MaxBatch"] = "16",
            ["MetaStone__ComputeThreads"] = "1",
        }, TimeSpan.FromMinutes(3));
        return new ClusterConnection(redis, clusterId, clusterId);
    }

    public static async Task<LoadReport> RunAsync(ClusterConnection connection, LoadSettings settings, Action<string>? log = null, CancellationToken cancellationToken = default)
    {
        settings.Validate();
        var clients = new List<MetaStoneClient>();
        try
        {
            for (int c = 0; c < settings.Clients; c++) clients.Add(await MetaStoneClient.ConnectAsync(connection, cancellationToken));
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            deadline.CancelAfter(settings.Deadline);
            int total = settings.Clients * settings.JobsPerClient, ended = 0;
            var clock = Stopwatch.StartNew();
            var runs = Enumerable.Range(0, total).Select(async j =>
            {
                var client = clients[j % clients.Count];
                var started = clock.Elapsed;
                var request = new JobRequest
                {
                    Prompt = settings.Prompt(j), K = settings.K, Seed = 1000L * j,
                    Sampling = new() { ThinkingBudget = settings.ThinkingBudget, MaxNewTokens = settings.MaxNewTokens, Temperature = settings.Temperature },
                };
                var outcome = await RunOneAsync(client, request, deadline.Token);
                int done = Interlocked.Increment(ref ended);
                if (log is not null && (done % Math.Max(1, total / 10) == 0 || done == total)) log($"{done}/{total} jobs ended ({clock.Elapsed.TotalSeconds:F0} s)");
                return (outcome.Outcome, outcome.Result, outcome.Error, Latency: (clock.Elapsed - started).TotalSeconds);
            }).ToList();
            var outcomes = await Task.WhenAll(runs);
            clock.Stop();
            cancellationToken.ThrowIfCancellationRequested();
            var latencies = outcomes.Where(o => o.Outcome == Outcome.Completed).Select(o => o.Latency).Order().ToArray();
            double Percentile(double p) => latencies.Length == 0 ? double.NaN : latencies[Math.Clamp((int)Math.Ceiling(latencies.Length * p) - 1, 0, latencies.Length - 1)];
            return new LoadReport(
                settings.Clients, total, settings.K, clock.Elapsed.TotalSeconds, outcomes.Count(o => o.Outcome == Outcome.Completed) / clock.Elapsed.TotalSeconds,
                Percentile(0.5), Percentile(0.99),
                outcomes.Count(o => o.Outcome == Outcome.Completed), outcomes.Count(o => o.Outcome == Outcome.Failed),
                outcomes.Count(o => o.Outcome == Outcome.Busy), outcomes.Count(o => o.Outcome == Outcome.Lost),
                outcomes.Count(o => o.Result is { } r && r.Candidates.Count != settings.K),
                outcomes.Where(o => o.Error is not null).GroupBy(o => $"{o.Outcome}: {o.Error}").OrderByDescending(g => g.Count())
                    .Take(5).Select(g => $"{g.Count()} × {g.Key}").ToList());
        }
        finally
        {
            foreach (var client in clients) await client.DisposeAsync();
        }
    }

    private static async Task<(Outcome Outcome, JobResult? Result, string? Error)> RunOneAsync(MetaStoneClient client, JobRequest request, CancellationToken deadline)
    {
        string jobId;
        try { jobId = await client.SubmitAsync(request, cancellationToken: deadline); }
        catch (ClusterBusyException e) { return (Outcome.Busy, null, e.Message); }
        catch (Exception e) when (!deadline.IsCancellationRequested) { return (Outcome.Failed, null, "submit: " + e.Message); }
        catch (OperationCanceledException) { return (Outcome.Lost, null, "not accepted before the deadline"); }
        try { return (Outcome.Completed, await client.AwaitResultAsync(jobId, deadline), null); }
        catch (Exception e)
        {
            // Accepted: find out what the cluster says about it now (a fresh call, not bound to the expired deadline).
            try
            {
                using var ask = new CancellationTokenSource(TimeSpan.FromSeconds(30));
                var status = await client.GetStatusAsync(jobId, ask.Token);
                return status.State switch
                {
                    JobState.Failed or JobState.Cancelled => (Outcome.Failed, null, status.Error ?? e.Message),
                    JobState.Completed => (Outcome.Completed, await client.AwaitResultAsync(jobId, ask.Token), null),
                    _ => (Outcome.Lost, null, $"still {status.State.ToString().ToLowerInvariant()} at the deadline"),
                };
            }
            catch (KeyNotFoundException) { return (Outcome.Lost, null, $"job {jobId} unknown to the cluster"); }
            catch (Exception inner) { return (Outcome.Lost, null, $"no answer about job {jobId}: {inner.Message}"); }
        }
    }
}
