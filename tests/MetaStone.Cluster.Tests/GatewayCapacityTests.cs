using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using MetaStone.Cli.Cluster;
using MetaStone.Cluster.Tests.Infrastructure;
using MetaStone.Contracts;
using MetaStone.Gateway;
using Xunit.Abstractions;

namespace MetaStone.Cluster.Tests;

/// <summary>
/// The gateway under pressure (issue 14): a cluster that admits 2 jobs at a time, and the random test model, whose candidates
/// never close their thinking and so run to their token limit (long enough to be caught in flight).
/// </summary>
public sealed class GatewayCapacityTests(ITestOutputHelper output) : IAsyncLifetime
{
    private EmbeddedCluster _cluster = null!;
    private Microsoft.AspNetCore.Builder.WebApplication _app = null!;
    private HttpClient _http = null!;
    private const string Model = "random-test-model";

    public async Task InitializeAsync()
    {
        _cluster = await EmbeddedCluster.StartAsync(TestModel.Directory, "cpu", maxBatch: 16, CancellationToken.None, maxRunningJobs: 2);
        var uri = new Uri($"http://127.0.0.1:{ClusterVerb.FreeLoopbackPort()}");
        _app = OpenAiGateway.Build(_cluster.Client, new GatewayOptions { ModelId = Model, Urls = uri.ToString() });
        await _app.StartAsync();
        _http = new HttpClient { BaseAddress = uri, Timeout = TimeSpan.FromMinutes(3) };
    }

    public async Task DisposeAsync()
    {
        _http.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
        await _cluster.DisposeAsync();
    }

    private static object Body(int n, int maxTokens, bool stream = false) => new
    {
        model = Model, n, max_tokens = maxTokens, stream, temperature = 1.0,
        messages = new[] { new { role = "user", content = TestModel.Prompt(5) } },
    };

    [Fact]
    public async Task Over_capacity_every_request_gets_a_result_or_a_429_and_none_is_lost()
    {
        var responses = await Task.WhenAll(Enumerable.Range(0, 12).Select(_ => _http.PostAsJsonAsync("/v1/chat/completions", Body(4, 200))));
        int ok = responses.Count(r => r.StatusCode == HttpStatusCode.OK), busy = responses.Count(r => (int)r.StatusCode == 429);
        output.WriteLine($"12 concurrent requests, 2 admitted at a time: {ok} completed, {busy} refused with 429");
        Assert.Equal(12, ok + busy);
        Assert.True(ok >= 2, "at least the admitted jobs complete");
        Assert.True(busy >= 1, "with 12 at once and room for 2, some must be refused");
        foreach (var r in responses.Where(r => (int)r.StatusCode == 429))
        {
            Assert.Equal("1", r.Headers.RetryAfter?.ToString());
            var error = (await r.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");
            Assert.Equal("cluster_busy", error.GetProperty("code").GetString());
        }
        // Every completed one has its 4 candidates; the cluster is idle afterwards (nothing accepted is left running).
        foreach (var r in responses.Where(r => r.StatusCode == HttpStatusCode.OK))
            Assert.Equal(4, (await r.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("metastone").GetProperty("k").GetInt32());
        var retried = await _http.PostAsJsonAsync("/v1/chat/completions", Body(2, 16));
        Assert.Equal(HttpStatusCode.OK, retried.StatusCode);
    }

    [Fact]
    public async Task A_client_that_disconnects_mid_stream_cancels_its_job()
    {
        // A client that really goes away: a raw socket, closed with the stream's unread bytes in its buffer (the kernel resets
        // the connection). HttpClient would instead drain an unfinished response for a while to reuse the connection.
        string json = JsonSerializer.Serialize(Body(256, 250, stream: true));
        string jobId;
        using (var socket = new System.Net.Sockets.TcpClient())
        {
            await socket.ConnectAsync(_http.BaseAddress!.Host, _http.BaseAddress.Port);
            var net = socket.GetStream();
            var head = $"POST /v1/chat/completions HTTP/1.1\r\nHost: {_http.BaseAddress.Authority}\r\nContent-Type: application/json\r\nContent-Length: {System.Text.Encoding.UTF8.GetByteCount(json)}\r\n\r\n{json}";
            await net.WriteAsync(System.Text.Encoding.UTF8.GetBytes(head));
            var reader = new StreamReader(net);
            string? line;
            using var patience = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            while ((line = await reader.ReadLineAsync(patience.Token)) is not null && !line.StartsWith("data: ", StringComparison.Ordinal)) { }
            Assert.NotNull(line);
            using var chunk = JsonDocument.Parse(line![(line.IndexOf('{'))..]);
            jobId = chunk.RootElement.GetProperty("id").GetString()!["chatcmpl-".Length..];
            Assert.Equal(JobState.Running, (await _cluster.Client.GetStatusAsync(jobId)).State);
            socket.Client.LingerState = new System.Net.Sockets.LingerOption(true, 0); // close = reset, at once
        }

        var clock = System.Diagnostics.Stopwatch.StartNew();
        JobState state = JobState.Running;
        while (clock.Elapsed < TimeSpan.FromSeconds(15) && (state = (await _cluster.Client.GetStatusAsync(jobId)).State) == JobState.Running)
            await Task.Delay(100);
        output.WriteLine($"job {jobId}: {state} {clock.ElapsedMilliseconds} ms after the disconnect");
        Assert.Equal(JobState.Cancelled, state);
    }
}
