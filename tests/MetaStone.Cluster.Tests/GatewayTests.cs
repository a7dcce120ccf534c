// ReasoningEffortLevel is marked experimental in the OpenAI SDK; it is the field this gateway serves.
#pragma warning disable OPENAI001
using System.ClientModel;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using MetaStone.Cli.Cluster;
using MetaStone.Cluster.Tests.Infrastructure;
using MetaStone.Gateway;
using OpenAI;
using OpenAI.Chat;
using Xunit.Abstractions;

namespace MetaStone.Cluster.Tests;

/// <summary>One embedded cluster and gateway for the gateway tests (loading the model and starting a silo costs seconds).</summary>
public sealed class GatewayFixture : IAsyncLifetime
{
    public const string ApiKey = "test-key";
    public EmbeddedCluster Cluster { get; private set; } = null!;
    public Microsoft.AspNetCore.Builder.WebApplication App { get; private set; } = null!;
    public Uri BaseUri { get; private set; } = null!;
    public string ModelId => "metastone-test";
    public const string Question = "Reach 81 with 5, 16, 13 using + - * /, each number at most once.";

    public async Task InitializeAsync()
    {
        // The shipped model: it finishes its thinking, so answers have content (the random test model never closes </think>).
        Cluster = await EmbeddedCluster.StartAsync(Path.Combine(TestModel.RepoRoot(), "models", "metastone-tiny"), "cpu", maxBatch: 32, CancellationToken.None);
        int port = ClusterVerb.FreeLoopbackPort();
        BaseUri = new Uri($"http://127.0.0.1:{port}");
        App = OpenAiGateway.Build(Cluster.Client, new GatewayOptions { ModelId = ModelId, Urls = BaseUri.ToString(), ApiKey = ApiKey });
        await App.StartAsync();
    }

    public ChatClient Chat(string? model = null, string key = ApiKey) =>
        new(model ?? ModelId, new ApiKeyCredential(key), new OpenAIClientOptions { Endpoint = new Uri(BaseUri, "/v1") });

    public HttpClient Http()
    {
        var http = new HttpClient { BaseAddress = BaseUri, Timeout = TimeSpan.FromMinutes(2) };
        http.DefaultRequestHeaders.Authorization = new("Bearer", ApiKey);
        return http;
    }

    public async Task DisposeAsync()
    {
        await App.StopAsync();
        await App.DisposeAsync();
        await Cluster.DisposeAsync();
    }
}

/// <summary>Issue 14 (first part): the OpenAI-compatible gateway, driven by the official OpenAI .NET SDK and plain HTTP.</summary>
public sealed class GatewayTests(GatewayFixture gateway, ITestOutputHelper output) : IClassFixture<GatewayFixture>
{
    [Fact]
    public async Task The_OpenAI_SDK_gets_one_answer_chosen_among_32_candidates_for_high_reasoning_effort()
    {
        var options = new ChatCompletionOptions { ReasoningEffortLevel = ChatReasoningEffortLevel.High, MaxOutputTokenCount = 256, Temperature = 1.0f };
        var completion = await gateway.Chat().CompleteChatAsync([new UserChatMessage(GatewayFixture.Question)], options);
        Assert.StartsWith(@"\boxed{", completion.Value.Content[0].Text);
        Assert.Equal(ChatMessageRole.Assistant, completion.Value.Role);
        using var raw = JsonDocument.Parse(completion.GetRawResponse().Content.ToString());
        var extension = raw.RootElement.GetProperty("metastone");
        Assert.Equal(32, extension.GetProperty("k").GetInt32());
        Assert.Equal("bon", extension.GetProperty("selection").GetString());
        Assert.True(raw.RootElement.GetProperty("usage").GetProperty("completion_tokens_details").GetProperty("reasoning_tokens").GetInt32() > 0);
        Assert.Contains("reasoning_content", raw.RootElement.GetProperty("choices")[0].GetProperty("message").ToString());
        output.WriteLine(completion.Value.Content[0].Text);
    }

    [Fact]
    public async Task Streaming_through_the_SDK_ends_with_the_winners_answer()
    {
        var updates = gateway.Chat().CompleteChatStreamingAsync([new UserChatMessage(GatewayFixture.Question)],
            new ChatCompletionOptions { ReasoningEffortLevel = ChatReasoningEffortLevel.Low, MaxOutputTokenCount = 256 });
        string text = "";
        ChatFinishReason? finish = null;
        await foreach (var update in updates)
        {
            foreach (var part in update.ContentUpdate) text += part.Text;
            finish ??= update.FinishReason;
        }
        Assert.StartsWith(@"\boxed{", text);
        Assert.Equal(ChatFinishReason.Stop, finish);
    }

    [Fact]
    public async Task Explicit_n_sets_k_and_models_lists_the_served_model()
    {
        using var http = gateway.Http();
        var models = await http.GetFromJsonAsync<JsonElement>("/v1/models");
        Assert.Equal(gateway.ModelId, models.GetProperty("data")[0].GetProperty("id").GetString());
        var response = await http.PostAsJsonAsync("/v1/chat/completions", new
        {
            model = gateway.ModelId, n = 4, max_tokens = 32, messages = new[] { new { role = "user", content = TestModel.Prompt(3) } },
            metastone = new { return_candidates = true, selection = "majority" },
        });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(4, body.GetProperty("metastone").GetProperty("k").GetInt32());
        Assert.Equal("majority", body.GetProperty("metastone").GetProperty("selection").GetString());
        Assert.Equal(4, body.GetProperty("metastone").GetProperty("candidates").GetArrayLength());
        Assert.All(body.GetProperty("metastone").GetProperty("candidates").EnumerateArray(),
            c => Assert.Contains(c.GetProperty("finish_reason").GetString(), new[] { "stop", "length" }));
        Assert.Contains(body.GetProperty("choices")[0].GetProperty("finish_reason").GetString(), new[] { "stop", "length" });
    }

    [Fact]
    public async Task Legacy_completions_return_the_winners_whole_response()
    {
        using var http = gateway.Http();
        var response = await http.PostAsJsonAsync("/v1/completions", new { model = gateway.ModelId, prompt = GatewayFixture.Question, reasoning_effort = "medium" });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("text_completion", body.GetProperty("object").GetString());
        Assert.Contains("</think>", body.GetProperty("choices")[0].GetProperty("text").GetString());
        Assert.Equal(8, body.GetProperty("metastone").GetProperty("k").GetInt32());
        var streamed = await http.PostAsJsonAsync("/v1/completions", new { model = gateway.ModelId, prompt = "x", stream = true });
        Assert.Equal(HttpStatusCode.BadRequest, streamed.StatusCode);
    }

    [Theory]
    [InlineData("unknown effort", 400, "unknown effort 'extreme' (valid: low, medium, high)")]
    [InlineData("unknown selection", 400, "unknown selection method 'best' (valid: bon, majority, weighted)")]
    [InlineData("n out of range", 400, "k = 0 is out of range")]
    [InlineData("wrong type", 400, "'temperature' must be a number")]
    [InlineData("unknown model", 404, "does not exist")]
    [InlineData("no messages", 400, "'messages' must be a non-empty array")]
    public async Task Bad_requests_get_OpenAI_errors_with_the_right_status(string what, int status, string message)
    {
        using var http = gateway.Http();
        object messages = new[] { new { role = "user", content = TestModel.Prompt(4) } };
        object body = what switch
        {
            "unknown effort" => new { model = gateway.ModelId, messages, reasoning_effort = "extreme" },
            "unknown selection" => new { model = gateway.ModelId, messages, metastone = new { selection = "best" } },
            "n out of range" => new { model = gateway.ModelId, messages, n = 0 },
            "wrong type" => new { model = gateway.ModelId, messages, temperature = "hot" },
            "unknown model" => new { model = "gpt-9", messages },
            "no messages" => new { model = gateway.ModelId, messages = Array.Empty<object>() },
            _ => throw new ArgumentOutOfRangeException(nameof(what)),
        };
        var response = await http.PostAsJsonAsync("/v1/chat/completions", body);
        Assert.Equal(status, (int)response.StatusCode);
        var error = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");
        Assert.Contains(message, error.GetProperty("message").GetString());
        Assert.DoesNotContain("   at ", error.GetProperty("message").GetString());
    }

    /// <summary>Prometheus metrics (OpenTelemetry) on the gateway: after a job, the cluster's series are there with non-zero values.</summary>
    [Fact]
    public async Task Metrics_show_jobs_tokens_and_scored_steps_after_a_completion()
    {
        using var http = gateway.Http();
        var response = await http.PostAsJsonAsync("/v1/chat/completions", new
        {
            model = gateway.ModelId, reasoning_effort = "low", messages = new[] { new { role = "user", content = GatewayFixture.Question } },
        });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        string metrics = "";
        // The exporter caches a scrape briefly: look again until the job is counted (bounded).
        for (var deadline = DateTime.UtcNow.AddSeconds(30); DateTime.UtcNow < deadline; await Task.Delay(500))
        {
            metrics = await http.GetStringAsync("/metrics");
            if (Value(metrics, "metastone_jobs_completed_total") > 0) break;
        }
        output.WriteLine(string.Join('\n', metrics.Split('\n').Where(l => l.StartsWith("metastone_", StringComparison.Ordinal))));
        foreach (var series in new[] { "metastone_jobs_accepted_total", "metastone_jobs_completed_total", "metastone_candidates_generated_total",
                     "metastone_tokens_generated_total", "metastone_sprm_steps_scored_total" })
            Assert.True(Value(metrics, series) > 0, $"{series} is missing or zero");
        Assert.Contains("metastone_job_duration_seconds_bucket", metrics);
        Assert.Contains("metastone_batch_slots", metrics);
    }

    /// <summary>The value of the first sample of a Prometheus series (any labels), or 0 when absent.</summary>
    private static double Value(string metrics, string series) =>
        metrics.Split('\n').Where(l => l.StartsWith(series + " ", StringComparison.Ordinal) || l.StartsWith(series + "{", StringComparison.Ordinal))
            .Select(l => double.Parse(l.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture)).DefaultIfEmpty(0).Sum();

    [Fact]
    public async Task A_wrong_API_key_is_401_through_the_SDK()
    {
        var e = await Assert.ThrowsAsync<ClientResultException>(() => gateway.Chat(key: "wrong").CompleteChatAsync([new UserChatMessage("hi")]));
        Assert.Equal(401, e.Status);
    }

    /// <summary>The OpenAPI document (Microsoft.AspNetCore.OpenApi) describes the OpenAI endpoints; it needs no API key.</summary>
    [Fact]
    public async Task The_OpenAPI_document_lists_the_endpoints()
    {
        using var http = new HttpClient { BaseAddress = gateway.BaseUri, Timeout = TimeSpan.FromSeconds(30) };
        var response = await http.GetAsync("/openapi/v1.json");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        string text = await response.Content.ReadAsStringAsync();
        using var document = JsonDocument.Parse(text);
        var root = document.RootElement;
        Assert.StartsWith("3.", root.GetProperty("openapi").GetString());
        Assert.Equal("MetaStone OpenAI-compatible gateway", root.GetProperty("info").GetProperty("title").GetString());
        var paths = root.GetProperty("paths");
        foreach (var path in new[] { "/v1/chat/completions", "/v1/completions" })
        {
            var post = paths.GetProperty(path).GetProperty("post");
            var statuses = post.GetProperty("responses").EnumerateObject().Select(p => p.Name).ToList();
            foreach (var status in new[] { "200", "400", "401", "404", "429", "503" }) Assert.Contains(status, statuses);
            Assert.True(post.GetProperty("requestBody").GetProperty("content").TryGetProperty("application/json", out _), $"{path} takes JSON");
        }
        Assert.True(paths.GetProperty("/v1/chat/completions").GetProperty("post").GetProperty("responses").GetProperty("200").GetProperty("content")
            .TryGetProperty("text/event-stream", out _), "streaming is documented");
        Assert.True(paths.GetProperty("/v1/models").TryGetProperty("get", out _));
        Assert.True(paths.GetProperty("/health").TryGetProperty("get", out _));
    }

    /// <summary>
    /// The official OpenAI JavaScript SDK (npm <c>openai</c>, pinned and fetched by tests/tools/fetch-openai-npm.sh) from a node script:
    /// one non-streaming and one streaming chat completion against this gateway, unchanged.
    /// </summary>
    [Fact]
    public async Task The_OpenAI_npm_package_gets_a_completion_and_a_stream_from_node()
    {
        string tools = Path.Combine(TestModel.RepoRoot(), "tests", "tools");
        // Idempotent (returns at once when cached; test.sh has already run it).
        var fetch = await RunAsync("bash", [Path.Combine(tools, "fetch-openai-npm.sh")], TimeSpan.FromMinutes(3));
        Assert.True(fetch.ExitCode == 0, "fetch-openai-npm.sh failed: " + fetch.Error);
        string cache = fetch.Output.Trim().Split('\n')[^1];
        var node = await RunAsync("node", [Path.Combine(tools, "openai-node-client.mjs"), cache, new Uri(gateway.BaseUri, "/v1").ToString(),
            GatewayFixture.ApiKey, gateway.ModelId, GatewayFixture.Question], TimeSpan.FromMinutes(4));
        output.WriteLine(node.Output);
        Assert.True(node.ExitCode == 0, $"node exited with {node.ExitCode}: {node.Error}");
        using var json = JsonDocument.Parse(node.Output.Trim().Split('\n')[^1]);
        var completion = json.RootElement.GetProperty("completion");
        Assert.Equal("chat.completion", completion.GetProperty("object").GetString());
        Assert.StartsWith(@"\boxed{", completion.GetProperty("content").GetString());
        Assert.False(string.IsNullOrWhiteSpace(completion.GetProperty("reasoning").GetString()), "the winner's thinking is in reasoning_content");
        Assert.Equal(8, completion.GetProperty("k").GetInt32());
        Assert.True(completion.GetProperty("reasoningTokens").GetInt32() > 0);
        var stream = json.RootElement.GetProperty("stream");
        Assert.StartsWith(@"\boxed{", stream.GetProperty("content").GetString());
        Assert.Equal("stop", stream.GetProperty("finishReason").GetString());
        Assert.Equal(2, stream.GetProperty("progress").GetInt32()); // one progress chunk per candidate of a low-effort job
        Assert.StartsWith("chatcmpl-", stream.GetProperty("id").GetString());
        Assert.NotEqual(completion.GetProperty("id").GetString(), stream.GetProperty("id").GetString());
    }

    private static async Task<(int ExitCode, string Output, string Error)> RunAsync(string file, string[] args, TimeSpan deadline)
    {
        var info = new System.Diagnostics.ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) info.ArgumentList.Add(a);
        using var process = System.Diagnostics.Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(deadline);
        try { await process.WaitForExitAsync(timeout.Token); }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish within {deadline}");
        }
        return (process.ExitCode, await stdout, await stderr);
    }
}
