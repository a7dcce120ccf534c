using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using MetaStone.Cli.Cluster;
using MetaStone.Gateway;
using MetaStone.Grains;
using Xunit.Abstractions;

namespace MetaStone.Cluster.Tests;

/// <summary>
/// Issue 14: 200 requests from 8 concurrent client tasks against a gateway whose cluster admits 3 jobs at a time. The embedded silo runs
/// the instant engine (made-up candidates, no model), so a job lasts only its orchestration (milliseconds) and 8 clients contend for the 3 slots.
/// </summary>
public sealed class GatewayLoadTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const int Requests = 200, Clients = 8, Queue = 3;
    private EmbeddedCluster _cluster = null!;
    private Microsoft.AspNetCore.Builder.WebApplication _app = null!;
    private Uri _uri = null!;

    public async Task InitializeAsync()
    {
        _cluster = await EmbeddedCluster.StartAsync(null, "cpu", maxBatch: 16, CancellationToken.None, maxRunningJobs: Queue, engine: "instant");
        _uri = new Uri($"http://127.0.0.1:{ClusterVerb.FreeLoopbackPort()}");
        _app = OpenAiGateway.Build(_cluster.Client, new GatewayOptions { ModelId = "simulated", Urls = _uri.ToString() });
        await _app.StartAsync();
    }

    public async Task DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
        await _cluster.DisposeAsync();
    }

    [Fact]
    public async Task Two_hundred_requests_from_eight_clients_each_get_a_result_or_a_429_and_the_cluster_ends_idle()
    {
        // Jobs the coordinators accepted and refused while the requests ran, counted at the source (the cluster's meter).
        long accepted = 0, refused = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == MetaStoneMetrics.MeterName && instrument.Name is "metastone.jobs.accepted" or "metastone.jobs.refused") l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, _, _) =>
        {
            if (instrument.Name == "metastone.jobs.accepted") Interlocked.Add(ref accepted, value);
            else Interlocked.Add(ref refused, value);
        });
        listener.Start();

        var outcomes = new ConcurrentDictionary<int, (HttpStatusCode Status, string? JobId, long Seed)>();
        int next = -1;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        await Task.WhenAll(Enumerable.Range(0, Clients).Select(async _ =>
        {
            using var http = new HttpClient { BaseAddress = _uri, Timeout = TimeSpan.FromMinutes(2) };
            for (int i; (i = Interlocked.Increment(ref next)) < Requests;)
            {
                // Each request is told apart by its seed, which comes back as candidate 0's seed.
                long seed = 1_000_000 + i * 10L;
                var response = await http.PostAsJsonAsync("/v1/chat/completions", new
                {
                    model = "simulated", n = 2, seed, messages = new[] { new { role = "user", content = $"request {i}" } },
                    metastone = new { return_candidates = true },
                }, deadline.Token);
                string? jobId = null;
                if (response.StatusCode == HttpStatusCode.OK)
                {
                    var body = await response.Content.ReadFromJsonAsync<JsonElement>(deadline.Token);
                    var extension = body.GetProperty("metastone");
                    jobId = extension.GetProperty("job_id").GetString();
                    Assert.Equal(seed, extension.GetProperty("candidates")[0].GetProperty("seed").GetInt64()); // the answer to this request, not another's
                }
                else if ((int)response.StatusCode == 429)
                {
                    Assert.Equal("1", response.Headers.RetryAfter?.ToString());
                    Assert.Equal("cluster_busy", (await response.Content.ReadFromJsonAsync<JsonElement>(deadline.Token)).GetProperty("error").GetProperty("code").GetString());
                }
                Assert.True(outcomes.TryAdd(i, (response.StatusCode, jobId, seed)), $"request {i} answered twice");
            }
        }));
        listener.RecordObservableInstruments();
        var ok = outcomes.Values.Where(o => o.Status == HttpStatusCode.OK).ToList();
        int busy = outcomes.Values.Count(o => (int)o.Status == 429);
        output.WriteLine($"{Requests} requests from {Clients} clients, {Queue} jobs admitted at a time: {ok.Count} completed, {busy} refused with 429, " +
            $"other {Requests - ok.Count - busy}; {clock.Elapsed.TotalSeconds:F1} s; cluster counted {accepted} accepted, {refused} refused");

        Assert.Equal(Requests, outcomes.Count);                       // none lost
        Assert.Equal(Requests, ok.Count + busy);                      // each a result or a 429
        Assert.True(ok.Count >= Queue && busy > 0, "with 8 clients and room for 3 jobs, some are admitted and some refused");
        Assert.Equal(ok.Count, ok.Select(o => o.JobId).Distinct().Count()); // no job answered two requests
        Assert.Equal(ok.Count, accepted);                             // every accepted job was answered, none ran unasked (duplicated)
        Assert.Equal(busy, refused);

        // Idle afterwards: no job holds an admission slot (3 fresh jobs at once are all admitted) and no replica has work.
        using var after = new HttpClient { BaseAddress = _uri, Timeout = TimeSpan.FromMinutes(1) };
        var again = await Task.WhenAll(Enumerable.Range(0, Queue).Select(i => after.PostAsJsonAsync("/v1/chat/completions",
            new { model = "simulated", n = 2, messages = new[] { new { role = "user", content = $"after {i}" } } })));
        Assert.All(again, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        var replicas = await _cluster.Client.GetReplicasAsync();
        Assert.All(replicas, r => Assert.Equal(0, r.ActiveSequences + r.QueuedSequences));
    }
}
