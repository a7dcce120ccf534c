using System.Diagnostics;
using System.Globalization;
using System.Text;
using MetaStone.Client;
using MetaStone.Contracts;
using MetaStone.Silo;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Orleans;

namespace MetaStone.Bench;

public sealed record BenchSettings
{
    public IReadOnlyList<int> SiloCounts { get; init; } = [1, 2, 4, 8, 16];
    public int OverheadJobs { get; init; } = 30;
    public int LatencyJobs { get; init; } = 3;
    public int ConcurrentJobs { get; init; } = 8;
    public double StepMilliseconds { get; init; } = 10;
    public double PerSequenceMilliseconds { get; init; } = 2;
    public int SlotsPerSilo { get; init; } = 4;
    public int TokensPerCandidate { get; init; } = 32;
    public string? Redis { get; init; }
    public string? Model { get; init; }
    public int RealMaxNewTokens { get; init; } = 64;
    public bool SkipScaling { get; init; }
    public bool SkipRealModel { get; init; }
}

public sealed record OverheadResult(int Jobs, int K, double MeanMsPerJob, double MedianMsPerJob, double MeanMsPerCandidate);
/// <param name="MostCandidatesOnOneReplica">Of the last latency job: how evenly placement spread the k candidates.</param>
/// <param name="SlowestCandidateMs">Of the last latency job: the longest time a candidate spent in its replica (queue + generation).</param>
public sealed record ScalingPoint(int Silos, double LatencyMs, double Speedup, double Efficiency, double JobsPerSecond, int MostCandidatesOnOneReplica, double SlowestCandidateMs);
public sealed record RealModelPoint(int Silos, double LatencyMs, double Speedup);
public sealed record ClusterBenchReport(OverheadResult Overhead, IReadOnlyList<ScalingPoint> Scaling, IReadOnlyList<RealModelPoint> RealModel, IReadOnlyList<string> Notes, BenchSettings Settings)
{
    public string ToTable()
    {
        var s = new StringBuilder();
        s.AppendLine(CultureInfo.InvariantCulture, $"orchestration overhead (instant engine, embedded silo, k = {Overhead.K}, {Overhead.Jobs} jobs):");
        s.AppendLine(CultureInfo.InvariantCulture, $"  {Overhead.MeanMsPerJob:F2} ms per job (median {Overhead.MedianMsPerJob:F2}), {Overhead.MeanMsPerCandidate:F3} ms per candidate");
        if (Scaling.Count > 0)
        {
            s.AppendLine(CultureInfo.InvariantCulture, $"horizontal scaling (simulated GPU: {Settings.StepMilliseconds} ms/step + {Settings.PerSequenceMilliseconds} ms/sequence, {Settings.SlotsPerSilo} slots/silo, {Settings.TokensPerCandidate} tokens; k = 32):");
            s.AppendLine("  silos  latency ms  speed-up  efficiency  jobs/s  most candidates/replica  slowest candidate ms");
            foreach (var p in Scaling)
                s.AppendLine(CultureInfo.InvariantCulture, $"  {p.Silos,5}  {p.LatencyMs,10:F0}  {p.Speedup,8:F2}  {p.Efficiency,10:F2}  {p.JobsPerSecond,6:F2}  {p.MostCandidatesOnOneReplica,23}  {p.SlowestCandidateMs,20:F0}");
        }
        if (RealModel.Count > 0)
        {
            s.AppendLine(CultureInfo.InvariantCulture, $"real model ({Settings.Model}, one compute thread per silo, k = 32, {Settings.RealMaxNewTokens} new tokens):");
            s.AppendLine("  silos  latency ms  speed-up");
            foreach (var p in RealModel) s.AppendLine(CultureInfo.InvariantCulture, $"  {p.Silos,5}  {p.LatencyMs,10:F0}  {p.Speedup,8:F2}");
        }
        foreach (var note in Notes) s.AppendLine("note: " + note);
        return s.ToString();
    }
}

/// <summary>
/// <c>metastone bench cluster</c>: what the cluster costs on top of the engine, and how it scales. Every number
/// is measured through the same client, grains and silo executable users run.
/// </summary>
public static class ClusterBenchmark
{
    private const string Prompt = "Compute 12 + 7 * 3 - 5 from left to right.";

    public static async Task<ClusterBenchReport> RunAsync(BenchSettings settings, Action<string> log, CancellationToken cancellationToken)
    {
        var notes = new List<string>();
        var overhead = await MeasureOverheadAsync(settings, log, cancellationToken);
        var scaling = new List<ScalingPoint>();
        var real = new List<RealModelPoint>();
        if (!settings.SkipScaling || !settings.SkipRealModel)
        {
            await using var redisGroup = new SiloProcessGroup();
            string redis = settings.Redis ?? await redisGroup.StartRedisAsync();
            if (!settings.SkipScaling)
            {
                foreach (int n in settings.SiloCounts)
                {
                    log($"scaling: {n} simulated silo(s)…");
                    var (latency, throughput, last) = await MeasureClusterAsync(redis, n, i => SimulatedSilo(settings, i), settings.LatencyJobs, settings.ConcurrentJobs,
                        new JobRequest { Prompt = Prompt, Effort = ReasoningEffort.High, Sampling = new() { MaxNewTokens = settings.TokensPerCandidate } }, cancellationToken);
                    // Speed-up relative to the first (smallest) count, scaled so one silo = 1.
                    double speedup = scaling.Count > 0 ? scaling[0].LatencyMs / latency * scaling[0].Silos : n;
                    scaling.Add(new ScalingPoint(n, latency, speedup, speedup / n, throughput,
                        last.Candidates.GroupBy(c => c.Replica).Max(g => g.Count()), last.Candidates.Max(c => c.GenerationSeconds) * 1000));
                }
            }
            if (!settings.SkipRealModel)
            {
                string? model = settings.Model;
                if (model is null || !File.Exists(Path.Combine(model, "config.json")))
                    notes.Add($"real-model runs skipped: no model at {model ?? "(none)"} (train one with 'metastone train' or pass --model)");
                else
                {
                    foreach (int n in new[] { 1, 2 })
                    {
                        log($"real model: {n} silo(s)…");
                        var (latency, _, _) = await MeasureClusterAsync(redis, n, i => RealSilo(model, i), settings.LatencyJobs, 0,
                            new JobRequest { Prompt = Prompt, Effort = ReasoningEffort.High, Sampling = new() { MaxNewTokens = settings.RealMaxNewTokens, Temperature = 1.0 } }, cancellationToken);
                        real.Add(new RealModelPoint(n, latency, real.Count > 0 ? real[0].LatencyMs / latency : 1));
                    }
                }
            }
        }
        if (Environment.ProcessorCount < 16)
            notes.Add($"this machine has {Environment.ProcessorCount} cores: with many silo processes the orchestration itself competes for CPU, so speed-up at 8–16 silos is bounded by the host, not by the engine");
        return new ClusterBenchReport(overhead, scaling, real, notes, settings);
    }

    private static Dictionary<string, string> SimulatedSilo(BenchSettings s, int i) => new()
    {
        ["MetaStone__Name"] = $"sim{i}",
        ["MetaStone__Engine"] = "simulated",
        ["MetaStone__SimulatedStepMilliseconds"] = s.StepMilliseconds.ToString(CultureInfo.InvariantCulture),
        ["MetaStone__SimulatedPerSequenceMilliseconds"] = s.PerSequenceMilliseconds.ToString(CultureInfo.InvariantCulture),
        ["MetaStone__SimulatedTokens"] = s.TokensPerCandidate.ToString(CultureInfo.InvariantCulture),
        ["MetaStone__MaxBatch"] = s.SlotsPerSilo.ToString(CultureInfo.InvariantCulture),
    };

    private static Dictionary<string, string> RealSilo(string model, int i) => new()
    {
        ["MetaStone__Name"] = $"real{i}",
        ["MetaStone__Model"] = model,
        ["MetaStone__ComputeThreads"] = "1",
        ["MetaStone__MaxSequenceLength"] = "512",
    };

    private static async Task<OverheadResult> MeasureOverheadAsync(BenchSettings settings, Action<string> log, CancellationToken cancellationToken)
    {
        log("overhead: embedded silo with an instant engine…");
        using var host = await MetaStoneSilo.StartAsync(new SiloSettings
        {
            Name = "bench", Engine = "instant", MaxBatch = 64, ClusterId = "bench-" + Environment.ProcessId,
            SiloPort = LoopbackPort.Free(), GatewayPort = LoopbackPort.Free(),
        }, logging => { }, cancellationToken);
        var client = MetaStoneClient.FromGrainFactory(host.Services.GetRequiredService<IClusterClient>());
        var request = new JobRequest { Prompt = Prompt, K = 32, Sampling = new() { MaxNewTokens = 8 } };
        for (int i = 0; i < 5; i++) await client.RunAsync(request with { Seed = i }, cancellationToken); // JIT and activation warm-up
        var times = new List<double>();
        for (int i = 0; i < settings.OverheadJobs; i++)
        {
            var clock = Stopwatch.StartNew();
            await client.RunAsync(request with { Seed = 100 + i }, cancellationToken);
            times.Add(clock.Elapsed.TotalMilliseconds);
        }
        await host.StopAsync(TimeSpan.FromSeconds(5));
        times.Sort();
        return new OverheadResult(times.Count, 32, times.Average(), times[times.Count / 2], times.Average() / 32);
    }

    private static async Task<(double LatencyMs, double JobsPerSecond, JobResult Last)> MeasureClusterAsync(string redis, int silos,
        Func<int, Dictionary<string, string>> siloSettings, int latencyJobs, int concurrentJobs, JobRequest request, CancellationToken cancellationToken)
    {
        string clusterId = $"bench-{silos}-{Guid.NewGuid():N}"[..24];
        await using var group = new SiloProcessGroup();
        await group.StartSilosAsync(silos, i =>
        {
            var env = siloSettings(i);
            env["MetaStone__Redis"] = redis;
            env["MetaStone__ClusterId"] = clusterId;
            env["MetaStone__ServiceId"] = clusterId;
            return env;
        }, TimeSpan.FromMinutes(3));
        await using var client = await MetaStoneClient.ConnectAsync(new ClusterConnection(redis, clusterId, clusterId), cancellationToken);
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while ((await client.GetReplicasAsync(cancellationToken)).Count < silos)
        {
            if (DateTime.UtcNow > deadline) throw new InvalidOperationException($"only {(await client.GetReplicasAsync(cancellationToken)).Count} of {silos} replicas registered");
            await Task.Delay(200, cancellationToken);
        }
        await client.RunAsync(request with { Seed = 1 }, cancellationToken); // warm-up
        var latencies = new List<double>();
        JobResult? last = null;
        for (int i = 0; i < latencyJobs; i++)
        {
            var clock = Stopwatch.StartNew();
            last = await client.RunAsync(request with { Seed = 10 + i }, cancellationToken);
            latencies.Add(clock.Elapsed.TotalMilliseconds);
        }
        double throughput = 0;
        if (concurrentJobs > 0)
        {
            var clock = Stopwatch.StartNew();
            await Task.WhenAll(Enumerable.Range(0, concurrentJobs).Select(i => client.RunAsync(request with { Seed = 1000 + i }, cancellationToken)));
            throughput = concurrentJobs / clock.Elapsed.TotalSeconds;
        }
        return (latencies.Average(), throughput, last!);
    }
}
