using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json;
using MetaStone.Client;
using MetaStone.Contracts;
using MetaStone.Gateway;

namespace MetaStone.Bench;

/// <summary>Settings of <c>metastone bench gateway</c>.</summary>
public sealed record GatewayBenchSettings
{
    public string Prompt { get; init; } = "Reach 81 with 5, 16, 13 using + - * /, each number at most once.";
    /// <summary>Candidates of the overhead job (the issue's k = 8).</summary>
    public int K { get; init; } = 8;
    public int MaxNewTokens { get; init; } = 256;
    /// <summary>Pairs of the overhead part: each pair runs the same job (same seed, so the same work) once through HTTP and once through the Orleans client.</summary>
    public int Pairs { get; init; } = 10;
    public int Clients { get; init; } = 8;
    public int JobsPerClient { get; init; } = 5;
    /// <summary>Candidates of each throughput job.</summary>
    public int ThroughputK { get; init; } = 2;
    /// <summary>Pairs of throughput rounds (one with streaming, one without, in alternating order).</summary>
    public int RoundPairs { get; init; } = 6;

    public void Validate()
    {
        if (K is < 1 or > 256) throw new ArgumentException($"--k must be 1–256 (got {K})");
        if (ThroughputK is < 1 or > 256) throw new ArgumentException($"--throughput-k must be 1–256 (got {ThroughputK})");
        if (MaxNewTokens < 1) throw new ArgumentException($"--max-new-tokens must be ≥ 1 (got {MaxNewTokens})");
        if (RoundPairs < 1) throw new ArgumentException($"--round-pairs must be ≥ 1 (got {RoundPairs})");
        if (Pairs < 1) throw new ArgumentException($"--pairs must be ≥ 1 (got {Pairs})");
        if (Clients < 1 || JobsPerClient < 1) throw new ArgumentException($"--clients and --jobs-per-client must be ≥ 1 (got {Clients}, {JobsPerClient})");
    }
}

/// <summary>One job through the gateway and through the Orleans client, the same job (same seed).</summary>
public sealed record OverheadPair(double HttpSeconds, double OrleansSeconds);

/// <param name="Ratio">Median over the pairs of HTTP / Orleans time (each pair ran the same job back to back, so the noise of the machine
/// mostly cancels within a pair); <paramref name="RatioOfMedians"/> is the median HTTP time over the median Orleans time.</param>
public sealed record GatewayOverheadReport(int K, int MaxNewTokens, IReadOnlyList<OverheadPair> Pairs, double HttpMedianSeconds, double OrleansMedianSeconds,
    double Ratio, double RatioOfMedians, double OverheadPercent, double TargetOverheadPercent, bool TargetMet);

public sealed record ThroughputRound(bool Streaming, int Jobs, double Seconds, double JobsPerSecond);

/// <param name="Ratio">Median over the round pairs of streaming / non-streaming throughput; <paramref name="PooledRatio"/> is all streamed jobs
/// per second over all non-streamed jobs per second.</param>
public sealed record GatewayStreamingReport(int Clients, int JobsPerClient, int K, IReadOnlyList<ThroughputRound> Rounds, double StreamingJobsPerSecond,
    double NonStreamingJobsPerSecond, double Ratio, double PooledRatio, double TargetRatio, bool TargetMet);

public sealed record GatewayBenchReport(string Machine, string LoadAverageBefore, string LoadAverageAfter, string Cluster,
    GatewayOverheadReport Overhead, GatewayStreamingReport Streaming)
{
    public IEnumerable<string> ToLines()
    {
        yield return $"metastone bench gateway: {Machine}; cluster: {Cluster}; load average {LoadAverageBefore} before, {LoadAverageAfter} after";
        yield return $"1. overhead, one k = {Overhead.K} job ({Overhead.MaxNewTokens} tokens max), {Overhead.Pairs.Count} interleaved pairs with the same seed:";
        yield return $"   HTTP median {Overhead.HttpMedianSeconds * 1000:F0} ms, Orleans client median {Overhead.OrleansMedianSeconds * 1000:F0} ms, " +
            $"median pair ratio {Overhead.Ratio:F3} ({Overhead.OverheadPercent:+0.0;-0.0}%; target ≤ {Overhead.TargetOverheadPercent:F0}%: {(Overhead.TargetMet ? "met" : "MISSED")}), " +
            $"ratio of medians {Overhead.RatioOfMedians:F3}";
        yield return $"2. throughput, {Streaming.Clients} concurrent clients × {Streaming.JobsPerClient} jobs of k = {Streaming.K} per round, {Streaming.Rounds.Count / 2} interleaved round pairs:";
        foreach (var round in Streaming.Rounds)
            yield return $"   stream {(round.Streaming ? "on " : "off")}: {round.Jobs} jobs in {round.Seconds:F2} s = {round.JobsPerSecond:F2} jobs/s";
        yield return $"   streaming on / off: median pair ratio {Streaming.Ratio:F3} (target ≥ {Streaming.TargetRatio:F2}: {(Streaming.TargetMet ? "met" : "MISSED")}), pooled {Streaming.PooledRatio:F3}";
    }
}

/// <summary>
/// Issue 14's benchmark of the HTTP gateway, on one cluster with one gateway in this process: (1) the overhead of one job through
/// HTTP against the same job through the Orleans client; (2) throughput of many concurrent clients with streaming on against off.
/// Both are ratios measured in the same run, interleaved so that a noisy machine slows both sides alike; absolute times are reported
/// but judged by nobody.
/// </summary>
public static class GatewayBenchmark
{
    public const double TargetOverheadPercent = 5, TargetStreamingRatio = 0.95;
    /// <summary>Model id the benchmark's own gateway serves.</summary>
    public const string ModelId = "bench";

    /// <summary>Starts a gateway over <paramref name="client"/> on a free loopback port in this process, runs <see cref="RunAsync"/> through it, stops it.</summary>
    public static async Task<GatewayBenchReport> RunWithGatewayAsync(MetaStoneClient client, string clusterDescription, GatewayBenchSettings settings,
        Action<string> log, CancellationToken cancellationToken)
    {
        settings.Validate();
        var uri = new Uri($"http://127.0.0.1:{LoopbackPort.Free()}");
        await using var app = OpenAiGateway.Build(client, new GatewayOptions { ModelId = ModelId, Urls = uri.ToString() });
        await app.StartAsync(cancellationToken);
        var report = await RunAsync(client, uri, ModelId, clusterDescription, settings, log, cancellationToken);
        await app.StopAsync(CancellationToken.None);
        return report;
    }

    public static async Task<GatewayBenchReport> RunAsync(MetaStoneClient client, Uri gateway, string modelId, string clusterDescription,
        GatewayBenchSettings settings, Action<string> log, CancellationToken cancellationToken)
    {
        settings.Validate();
        string loadBefore = BenchMachine.LoadAverage();
        using var http = new HttpClient { BaseAddress = gateway, Timeout = TimeSpan.FromMinutes(10) };

        // Warm-up: the first job pays for JIT, the prompt's tokenization and the HTTP connection on both paths.
        await ViaHttpAsync(http, modelId, settings.Prompt, settings.K, settings.MaxNewTokens, seed: 1, stream: false, cancellationToken);
        await ViaOrleansAsync(client, settings.Prompt, settings.K, settings.MaxNewTokens, seed: 1, cancellationToken);

        var pairs = new List<OverheadPair>();
        for (int i = 0; i < settings.Pairs; i++)
        {
            long seed = 1000 + i * 100;
            // Alternate which path goes first, so a trend in the machine's load does not favour one side.
            double httpSeconds, orleansSeconds;
            if (i % 2 == 0)
            {
                httpSeconds = await ViaHttpAsync(http, modelId, settings.Prompt, settings.K, settings.MaxNewTokens, seed, stream: false, cancellationToken);
                orleansSeconds = await ViaOrleansAsync(client, settings.Prompt, settings.K, settings.MaxNewTokens, seed, cancellationToken);
            }
            else
            {
                orleansSeconds = await ViaOrleansAsync(client, settings.Prompt, settings.K, settings.MaxNewTokens, seed, cancellationToken);
                httpSeconds = await ViaHttpAsync(http, modelId, settings.Prompt, settings.K, settings.MaxNewTokens, seed, stream: false, cancellationToken);
            }
            pairs.Add(new OverheadPair(httpSeconds, orleansSeconds));
            log($"overhead pair {i + 1}/{settings.Pairs}: HTTP {httpSeconds * 1000:F0} ms, Orleans {orleansSeconds * 1000:F0} ms");
        }
        double httpMedian = Median(pairs.Select(p => p.HttpSeconds)), orleansMedian = Median(pairs.Select(p => p.OrleansSeconds));
        double ratio = Median(pairs.Select(p => p.HttpSeconds / p.OrleansSeconds));
        var overhead = new GatewayOverheadReport(settings.K, settings.MaxNewTokens, pairs, httpMedian, orleansMedian, ratio, httpMedian / orleansMedian, (ratio - 1) * 100,
            TargetOverheadPercent, (ratio - 1) * 100 <= TargetOverheadPercent);

        // Warm-up of the concurrent path (8 connections, the SSE writer), discarded: the first round measured 35 % below the others.
        await ThroughputAsync(gateway, modelId, settings with { JobsPerClient = 1 }, streaming: false, cancellationToken);
        await ThroughputAsync(gateway, modelId, settings with { JobsPerClient = 1 }, streaming: true, cancellationToken);
        var rounds = new List<ThroughputRound>();
        var pairRatios = new List<double>();
        for (int pair = 0; pair < settings.RoundPairs; pair++)
        {
            // off/on, then on/off, …: neither mode always runs first.
            var (first, second) = pair % 2 == 0 ? (false, true) : (true, false);
            var a = await ThroughputAsync(gateway, modelId, settings, first, cancellationToken);
            var b = await ThroughputAsync(gateway, modelId, settings, second, cancellationToken);
            rounds.Add(a);
            rounds.Add(b);
            var (onRound, offRound) = first ? (a, b) : (b, a);
            pairRatios.Add(onRound.JobsPerSecond / offRound.JobsPerSecond);
            log($"throughput pair {pair + 1}/{settings.RoundPairs}: stream on {onRound.JobsPerSecond:F2} jobs/s, off {offRound.JobsPerSecond:F2} jobs/s");
        }
        double Throughput(bool streaming) => rounds.Where(r => r.Streaming == streaming).Sum(r => r.Jobs) / rounds.Where(r => r.Streaming == streaming).Sum(r => r.Seconds);
        double on = Throughput(true), off = Throughput(false), streamRatio = Median(pairRatios);
        var streamingReport = new GatewayStreamingReport(settings.Clients, settings.JobsPerClient, settings.ThroughputK, rounds, on, off, streamRatio, on / off,
            TargetStreamingRatio, streamRatio >= TargetStreamingRatio);
        return new GatewayBenchReport(BenchMachine.Description(), loadBefore, BenchMachine.LoadAverage(), clusterDescription, overhead, streamingReport);
    }

    private static async Task<ThroughputRound> ThroughputAsync(Uri gateway, string modelId, GatewayBenchSettings settings, bool streaming, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        // One connection per client, like independent users.
        await Task.WhenAll(Enumerable.Range(0, settings.Clients).Select(async c =>
        {
            using var http = new HttpClient { BaseAddress = gateway, Timeout = TimeSpan.FromMinutes(10) };
            for (int j = 0; j < settings.JobsPerClient; j++)
                await ViaHttpAsync(http, modelId, settings.Prompt, settings.ThroughputK, settings.MaxNewTokens, seed: 50_000 + c * 1000 + j * 10, streaming, cancellationToken);
        }));
        double seconds = clock.Elapsed.TotalSeconds;
        int jobs = settings.Clients * settings.JobsPerClient;
        return new ThroughputRound(streaming, jobs, seconds, jobs / seconds);
    }

    /// <summary>One chat completion through the gateway, to its last byte; the wall time in seconds.</summary>
    private static async Task<double> ViaHttpAsync(HttpClient http, string modelId, string prompt, int k, int maxTokens, long seed, bool stream, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = JsonContent.Create(new { model = modelId, n = k, max_completion_tokens = maxTokens, seed, stream, messages = new[] { new { role = "user", content = prompt } } }),
        };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        if (!response.IsSuccessStatusCode)
            throw new InvalidOperationException($"the gateway answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync(cancellationToken)}");
        if (!stream)
        {
            using var body = await JsonDocument.ParseAsync(await response.Content.ReadAsStreamAsync(cancellationToken), cancellationToken: cancellationToken);
            if (!body.RootElement.TryGetProperty("choices", out _)) throw new InvalidOperationException("the gateway's answer has no choices");
        }
        else
        {
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellationToken));
            string? line;
            bool done = false;
            while ((line = await reader.ReadLineAsync(cancellationToken)) is not null)
                if (line == "data: [DONE]") { done = true; break; }
            if (!done) throw new InvalidOperationException("the stream ended without data: [DONE]");
        }
        return clock.Elapsed.TotalSeconds;
    }

    private static async Task<double> ViaOrleansAsync(MetaStoneClient client, string prompt, int k, int maxTokens, long seed, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        // The same request the gateway builds from the HTTP body (sampling defaults included).
        string id = await client.SubmitAsync(new JobRequest { Prompt = prompt, K = k, Sampling = new() { MaxNewTokens = maxTokens }, Seed = seed }, cancellationToken: cancellationToken);
        await client.AwaitResultAsync(id, cancellationToken);
        return clock.Elapsed.TotalSeconds;
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}
