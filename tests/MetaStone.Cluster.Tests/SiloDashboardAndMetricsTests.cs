using System.Globalization;
using System.Net;
using System.Text.Json;
using MetaStone.Cli.Cluster;
using MetaStone.Cluster.Tests.Infrastructure;
using MetaStone.Contracts;
using Xunit.Abstractions;

namespace MetaStone.Cluster.Tests;

/// <summary>
/// Issue 14: a real silo (the embedded one, on loopback) with Orleans' dashboard and its own Prometheus endpoint. The shipped
/// model, 4 batch slots (so a k = 48 job keeps sequences waiting) and room for one job at a time (so a second submission is refused).
/// </summary>
public sealed class SiloDashboardAndMetricsTests(ITestOutputHelper output) : IAsyncLifetime
{
    private EmbeddedCluster _cluster = null!;
    private HttpClient _http = null!;
    private int _dashboardPort, _metricsPort;
    private const int Slots = 4;
    private const int Candidates = 48;

    public async Task InitializeAsync()
    {
        _dashboardPort = ClusterVerb.FreeLoopbackPort();
        _metricsPort = ClusterVerb.FreeLoopbackPort();
        _cluster = await EmbeddedCluster.StartAsync(Path.Combine(TestModel.RepoRoot(), "models", "metastone-tiny"), "cpu", maxBatch: Slots,
            CancellationToken.None, maxRunningJobs: 1, dashboardPort: _dashboardPort, metricsPort: _metricsPort);
        _http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
    }

    public async Task DisposeAsync()
    {
        _http.Dispose();
        await _cluster.DisposeAsync();
    }

    [Fact]
    public async Task The_dashboard_page_answers_and_its_API_sees_the_silo()
    {
        var page = await _http.GetAsync($"http://127.0.0.1:{_dashboardPort}/");
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Equal("text/html", page.Content.Headers.ContentType?.MediaType);
        string html = await page.Content.ReadAsStringAsync();
        Assert.Contains("Orleans", html, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("index.min.js", html);
        var script = await _http.GetAsync($"http://127.0.0.1:{_dashboardPort}/index.min.js");
        Assert.Equal(HttpStatusCode.OK, script.StatusCode);

        // The page's data comes from the cluster (the dashboard's grains): the one silo is listed as active (counters are sampled
        // every second, so look again for a while).
        string counters = "";
        for (var deadline = DateTime.UtcNow.AddSeconds(30); DateTime.UtcNow < deadline; await Task.Delay(500))
        {
            counters = await _http.GetStringAsync($"http://127.0.0.1:{_dashboardPort}/DashboardCounters");
            using var json = JsonDocument.Parse(counters);
            if (json.RootElement.TryGetProperty("totalActiveHostCount", out var hosts) && hosts.GetInt32() == 1) return;
        }
        Assert.Fail("the dashboard never reported one active silo: " + counters[..Math.Min(counters.Length, 2000)]);
    }

    [Fact]
    public async Task The_silo_exports_the_named_series_with_non_zero_values_during_and_after_a_job()
    {
        string Url(string path) => $"http://127.0.0.1:{_metricsPort}{path}";
        // The dashboard port serves no metrics and the metrics port no dashboard: each endpoint is on its own port.
        Assert.Equal(HttpStatusCode.NotFound, (await _http.GetAsync($"http://127.0.0.1:{_dashboardPort}/metrics")).StatusCode);
        string before = await _http.GetStringAsync(Url("/metrics"));

        // k = 48 on 4 slots: 44 candidates wait while 4 decode, 12 rounds: seen in flight even when the shipped model answers
        // this question in a few dozen tokens (with k = 16 the job was over in under 0.8 s under a loaded full test run).
        var request = new JobRequest { Prompt = "Reach 81 with 5, 16, 13 using + - * /, each number at most once.", K = Candidates, Sampling = new() { MaxNewTokens = 256, Temperature = 1.0 }, Seed = 11 };
        string jobId = await _cluster.Client.SubmitAsync(request);
        await Assert.ThrowsAsync<ClusterBusyException>(() => _cluster.Client.SubmitAsync(request with { Seed = 12 })); // one job at a time: refused

        // While it runs: the gauges of the batch (each scrape is a fresh observation; the exporter caches a scrape for a moment).
        var seen = new Dictionary<string, double>();
        string[] gauges = ["metastone_sequences_active", "metastone_sequences_waiting", "metastone_candidates_in_flight", "metastone_batch_occupancy", "metastone_replica_load"];
        var result = _cluster.Client.AwaitResultAsync(jobId);
        for (var deadline = DateTime.UtcNow.AddMinutes(2); !result.IsCompleted && DateTime.UtcNow < deadline && gauges.Any(g => seen.GetValueOrDefault(g) == 0); await Task.Delay(50))
        {
            string scrape = await _http.GetStringAsync(Url("/metrics"));
            foreach (var g in gauges) seen[g] = Math.Max(seen.GetValueOrDefault(g), Value(scrape, g));
        }
        output.WriteLine("largest values seen while the job ran: " + string.Join(", ", seen.Select(p => $"{p.Key} {p.Value}")));
        foreach (var g in gauges) Assert.True(seen.GetValueOrDefault(g) > 0, $"{g} never showed a non-zero value while a k = {Candidates} job ran on {Slots} slots");
        Assert.True(seen["metastone_batch_occupancy"] <= 1.0, "occupancy is a fraction of the slots");
        Assert.True(seen["metastone_replica_load"] > 1.0, $"{Candidates} sequences on {Slots} slots load the replica beyond 1 per slot");

        var finished = await result.WaitAsync(TimeSpan.FromMinutes(3));
        Assert.Equal(Candidates, finished.Candidates.Count);

        // After it: the counters grew (they are per process, so compare with the scrape before the job), and the latency
        // histogram has the job under its effort label.
        string after = "";
        for (var deadline = DateTime.UtcNow.AddSeconds(30); DateTime.UtcNow < deadline; await Task.Delay(500))
        {
            after = await _http.GetStringAsync(Url("/metrics"));
            if (Value(after, "metastone_jobs_completed_total") > Value(before, "metastone_jobs_completed_total")) break;
        }
        output.WriteLine(string.Join('\n', after.Split('\n').Where(l => l.StartsWith("metastone_", StringComparison.Ordinal) && !l.Contains("_bucket", StringComparison.Ordinal))));
        foreach (var series in new[]
                 {
                     "metastone_jobs_accepted_total", "metastone_jobs_refused_total", "metastone_jobs_completed_total", "metastone_candidates_generated_total",
                     "metastone_tokens_generated_total", "metastone_tokens_prompt_total", "metastone_sprm_steps_scored_total",
                     "metastone_engine_tokens_generated_total", "metastone_engine_prefill_tokens_total", "metastone_engine_prefill_tokens_reused_total",
                     "metastone_engine_decode_steps_total",
                 })
            Assert.True(Value(after, series) > Value(before, series), $"{series} did not grow over a k = {Candidates} job (before {Value(before, series)}, after {Value(after, series)})");
        Assert.True(Value(after, "metastone_tokens_generated_total") - Value(before, "metastone_tokens_generated_total") >= finished.Candidates.Sum(c => c.ResponseTokens));
        Assert.Contains(after.Split('\n'), l => l.StartsWith("metastone_job_duration_seconds_count{", StringComparison.Ordinal)
            && l.Contains("effort=\"n\"", StringComparison.Ordinal) && l.Contains($"k=\"{Candidates}\"", StringComparison.Ordinal));
        Assert.True(Value(after, "metastone_batch_slots") >= Slots);
        Assert.Equal(0, Value(after, "metastone_candidates_in_flight"));
    }

    /// <summary>The sum of a Prometheus series' samples (any labels, otel_scope labels included), or 0 when absent.</summary>
    private static double Value(string metrics, string series) =>
        metrics.Split('\n').Where(l => l.StartsWith(series + " ", StringComparison.Ordinal) || l.StartsWith(series + "{", StringComparison.Ordinal))
            .Select(l => double.Parse((l.Contains('}') ? l[(l.LastIndexOf('}') + 1)..] : l[series.Length..]).Trim().Split(' ')[0], CultureInfo.InvariantCulture))
            .DefaultIfEmpty(0).Sum();
}
