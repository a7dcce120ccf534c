using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using MetaStone.Client;
using MetaStone.Contracts;
using MetaStone.Grains.Jobs;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Metrics;

namespace MetaStone.Gateway;

/// <summary>Settings of the OpenAI-compatible gateway.</summary>
public sealed record GatewayOptions
{
    /// <summary>The model id clients name in <c>model</c> (and <c>GET /v1/models</c> lists).</summary>
    public required string ModelId { get; init; }
    /// <summary>Listen addresses; loopback by default.</summary>
    public string Urls { get; init; } = "http://127.0.0.1:8000";
    /// <summary>When set, every <c>/v1</c> request needs <c>Authorization: Bearer &lt;key&gt;</c>.</summary>
    public string? ApiKey { get; init; }
}

/// <summary>
/// An OpenAI-compatible HTTP front of the cluster (ASP.NET Core minimal APIs over the Orleans client): <c>GET /v1/models</c>,
/// <c>POST /v1/chat/completions</c> (also <c>stream: true</c>), <c>GET /health</c>. One chat completion is one job: the
/// selected trajectory's answer is <c>choices[0].message.content</c>, its thinking <c>reasoning_content</c> (the field vLLM and
/// DeepSeek use), <c>reasoning_effort</c> low / medium / high is k = 2 / 8 / 32 and <c>n</c> sets k explicitly; our extensions
/// travel in a <c>metastone</c> object. Requests are checked by the cluster's own rules (<see cref="JobRequestRules"/>);
/// errors use OpenAI's error shape and status codes, never a stack trace.
/// </summary>
public static class OpenAiGateway
{
    /// <summary>Interval of the SSE keep-alive comments of a streamed answer.</summary>
    public static readonly TimeSpan KeepAlive = TimeSpan.FromMilliseconds(250);

    public static WebApplication Build(MetaStoneClient client, GatewayOptions options, Action<ILoggingBuilder>? logging = null)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.WebHost.UseUrls(options.Urls);
        builder.Logging.ClearProviders();
        logging?.Invoke(builder.Logging);
        // Prometheus metrics (OpenTelemetry): the gateway's own HTTP metrics and the cluster's meter; co-hosted with an embedded
        // silo, the engines' and grains' series are exported here too.
        builder.Services.AddOpenTelemetry().WithMetrics(metrics => metrics
            .AddMeter(MetaStone.Grains.MetaStoneMetrics.MeterName, "Microsoft.AspNetCore.Hosting")
            .AddPrometheusExporter());
        // The OpenAPI document of these endpoints at /openapi/v1.json (Microsoft.AspNetCore.OpenApi).
        builder.Services.AddOpenApi(o => o.AddDocumentTransformer((document, _, _) =>
        {
            document.Info.Title = "MetaStone OpenAI-compatible gateway";
            document.Info.Description = "OpenAI's chat and legacy completions APIs over a MetaStone cluster: one request is one test-time-scaling job " +
                "(reasoning_effort low / medium / high = k 2 / 8 / 32 candidates, n = k; the SPRM head picks the winner). Extensions travel in a 'metastone' object.";
            return Task.CompletedTask;
        }));
        var app = builder.Build();
        app.MapOpenApi();
        app.MapPrometheusScrapingEndpoint("/metrics");
        app.MapGet("/health", () => Results.Json(new { status = "ok" }))
            .WithSummary("Liveness: 200 {\"status\": \"ok\"} while the gateway runs.").WithTags("Operations").Produces(200);
        app.MapGet("/v1/models", (HttpContext http) => Authorized(http, options) ?? Results.Json(new
        {
            @object = "list",
            data = new[] { new { id = options.ModelId, @object = "model", created = 0, owned_by = "metastone" } },
        })).WithSummary("The one model this gateway serves.").WithTags("OpenAI").Produces(200).Produces(401);
        app.MapPost("/v1/chat/completions", (Func<HttpContext, Task<IResult>>)(http => ChatCompletionsAsync(http, client, options)))
            .WithSummary("Chat completion by test-time scaling; stream: true answers with server-sent events.").WithTags("OpenAI")
            .WithDescription("Fields: model, messages (the last user message is the question), reasoning_effort (low|medium|high), n (k), " +
                "max_completion_tokens / max_tokens, temperature, top_p, seed, stream, metastone {selection: bon|majority|weighted, thinking_budget, return_candidates}. " +
                "Errors use OpenAI's shape: 400 bad field, 401 wrong key, 404 unknown model, 429 cluster busy (Retry-After), 503 no replica, 500 failed job.")
            .Accepts<JsonObject>("application/json")
            .Produces(200, typeof(JsonObject), "application/json", "text/event-stream")
            .Produces(400).Produces(401).Produces(404).Produces(429).Produces(500).Produces(503);
        app.MapPost("/v1/completions", (Func<HttpContext, Task<IResult>>)(http => CompletionsAsync(http, client, options)))
            .WithSummary("Legacy completion: choices[0].text is the selected trajectory's whole response (thinking included); not streamed.").WithTags("OpenAI")
            .Accepts<JsonObject>("application/json")
            .Produces(200, contentType: "application/json").Produces(400).Produces(401).Produces(404).Produces(429).Produces(500).Produces(503);
        return app;
    }

    private static IResult? Authorized(HttpContext http, GatewayOptions options)
    {
        if (options.ApiKey is null) return null;
        string? header = http.Request.Headers.Authorization;
        return header == $"Bearer {options.ApiKey}" ? null : Error(401, "invalid or missing API key (Authorization: Bearer …)", "invalid_request_error", code: "invalid_api_key");
    }

    /// <summary>OpenAI's error shape: <c>{"error": {"message", "type", "param", "code"}}</c>.</summary>
    public static IResult Error(int status, string message, string type = "invalid_request_error", string? param = null, string? code = null) =>
        Results.Json(new { error = new { message, type, param, code } }, statusCode: status);

    /// <summary>
    /// The legacy completions API: <c>prompt</c> is the question (the model's chat template wraps it, as for a chat message) and
    /// <c>choices[0].text</c> is the selected trajectory's whole response, thinking included. Not streamed.
    /// </summary>
    private static async Task<IResult> CompletionsAsync(HttpContext http, MetaStoneClient client, GatewayOptions options)
    {
        if (Authorized(http, options) is { } denied) return denied;
        JsonNode? body;
        try { body = await JsonNode.ParseAsync(http.Request.Body, cancellationToken: http.RequestAborted); }
        catch (JsonException e) { return Error(400, $"the body is not valid JSON: {e.Message}"); }
        if (body is not JsonObject o) return Error(400, "the body must be a JSON object");
        string? prompt = o["prompt"] switch
        {
            JsonValue v when v.TryGetValue<string>(out var text) => text,
            JsonArray { Count: 1 } one when one[0] is JsonValue v && v.TryGetValue<string>(out var text) => text,
            _ => null,
        };
        if (prompt is null) return Error(400, "'prompt' must be a string (or an array of one string)", param: "prompt");
        if (o["stream"] is JsonValue s && s.TryGetValue<bool>(out var stream) && stream)
            return Error(400, "streaming is served on /v1/chat/completions; /v1/completions answers at once", param: "stream");
        var asChat = (JsonObject)o.DeepClone();
        asChat.Remove("prompt");
        asChat["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = prompt });
        var (chat, problem) = await AdmitAsync(http, client, options, asChat);
        if (problem is not null) return problem;
        return await AnswerAsync(http, client, chat!.Value.JobId, async () =>
        {
            var result = await client.AwaitResultAsync(chat.Value.JobId, http.RequestAborted);
            var winner = result.Winner;
            int completionTokens = result.Candidates.Sum(c => c.ResponseTokens);
            return Results.Json(new
            {
                id = "cmpl-" + result.JobId,
                @object = "text_completion",
                created = DateTimeOffset.UtcNow.ToUnixTimeSeconds(),
                model = options.ModelId,
                choices = new[] { new { index = 0, text = winner.Text, finish_reason = FinishReason(winner) } },
                usage = new
                {
                    prompt_tokens = winner.PromptTokens, completion_tokens = completionTokens, total_tokens = winner.PromptTokens + completionTokens,
                    completion_tokens_details = new { reasoning_tokens = result.Candidates.Sum(c => c.ThinkingTokens) },
                },
                metastone = Extension(result, chat.Value.Request.ReturnCandidates),
            });
        });
    }

    /// <summary>
    /// Answers an accepted job; when the HTTP client goes away first, its job is cancelled (capacity freed, as `metastone cancel`
    /// does); a failed job is a 500 in OpenAI's shape.
    /// </summary>
    private static async Task<IResult> AnswerAsync(HttpContext http, MetaStoneClient client, string jobId, Func<Task<IResult>> answer)
    {
        try { return await answer(); }
        catch (OperationCanceledException) when (http.RequestAborted.IsCancellationRequested)
        {
            await client.CancelAsync(jobId, "the HTTP client disconnected", CancellationToken.None);
            return Results.Empty;
        }
        catch (InvalidOperationException e) { return Error(500, e.Message, "server_error"); }
    }

    /// <summary>Parses, checks and submits a chat-shaped request: the accepted job, or the error response.</summary>
    private static async Task<((ChatRequest Request, string JobId)? Job, IResult? Problem)> AdmitAsync(HttpContext http, MetaStoneClient client, GatewayOptions options, JsonNode? body)
    {
        ChatRequest chat;
        try { chat = ChatRequest.Parse(body); }
        catch (ChatRequestException e) { return (null, Error(400, e.Message, param: e.Param)); }
        if (chat.Model is not null && chat.Model != options.ModelId)
            return (null, Error(404, $"the model '{chat.Model}' does not exist; this gateway serves '{options.ModelId}'", code: "model_not_found", param: "model"));
        try { JobRequestRules.Validate(chat.Job); }
        catch (ArgumentException e) { return (null, Error(400, e.Message)); }
        try { return ((chat, await client.SubmitAsync(chat.Job, cancellationToken: http.RequestAborted)), null); }
        catch (ClusterBusyException e)
        {
            http.Response.Headers.RetryAfter = "1";
            return (null, Error(429, e.Message, "rate_limit_exceeded", code: "cluster_busy"));
        }
        catch (ArgumentException e) { return (null, Error(400, e.Message)); } // e.g. a prompt longer than the context
        catch (InvalidOperationException e) when (e.Message.Contains("no model replica", StringComparison.Ordinal)) { return (null, Error(503, e.Message, "server_error")); }
    }

    private static async Task<IResult> ChatCompletionsAsync(HttpContext http, MetaStoneClient client, GatewayOptions options)
    {
        if (Authorized(http, options) is { } denied) return denied;
        JsonNode? body;
        try { body = await JsonNode.ParseAsync(http.Request.Body, cancellationToken: http.RequestAborted); }
        catch (JsonException e) { return Error(400, $"the body is not valid JSON: {e.Message}"); }
        var (admitted, problem) = await AdmitAsync(http, client, options, body);
        if (problem is not null) return problem;
        var (chat, jobId) = admitted!.Value;
        return await AnswerAsync(http, client, jobId, async () =>
        {
            if (chat.Stream)
            {
                await StreamAsync(http, client, jobId, chat, options);
                return Results.Empty;
            }
            var result = await client.AwaitResultAsync(jobId, http.RequestAborted);
            return Results.Json(Completion(result, chat, options), statusCode: 200);
        });
    }

    private static async Task StreamAsync(HttpContext http, MetaStoneClient client, string jobId, ChatRequest chat, GatewayOptions options)
    {
        http.Response.ContentType = "text/event-stream";
        http.Response.Headers.CacheControl = "no-cache";
        string id = "chatcmpl-" + jobId;
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        async Task Send(object chunk)
        {
            await http.Response.WriteAsync("data: " + JsonSerializer.Serialize(chunk) + "\n\n", http.RequestAborted);
            await http.Response.Body.FlushAsync(http.RequestAborted);
        }
        object Chunk(object delta, string? finish, object? extension = null) => new
        {
            id, @object = "chat.completion.chunk", created, model = options.ModelId,
            choices = new[] { new { index = 0, delta, finish_reason = finish } },
            metastone = extension,
        };
        await Send(Chunk(new { role = "assistant", content = "" }, null));
        // Progress of the candidates as they finish (extension field; OpenAI clients ignore it). Between events an SSE comment
        // every KeepAlive: proxies keep the stream open, and a client that went away is noticed at the next write, so its job is
        // cancelled within about a second instead of running to the end.
        using var watching = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted);
        var events = client.WatchAsync(jobId, watching.Token).GetAsyncEnumerator(watching.Token);
        var next = events.MoveNextAsync().AsTask();
        try
        {
            while (true)
            {
                if (await Task.WhenAny(next, Task.Delay(KeepAlive, http.RequestAborted)) != next)
                {
                    http.RequestAborted.ThrowIfCancellationRequested();
                    await http.Response.WriteAsync(": keep-alive\n\n", http.RequestAborted);
                    await http.Response.Body.FlushAsync(http.RequestAborted);
                    continue;
                }
                if (!await next) break;
                var e = events.Current;
                if (e.Kind == ProgressKind.CandidateFinished)
                    await Send(Chunk(new { }, null, new { candidate = e.CandidateIndex, score = e.Score, finished = e.Finished, k = e.K, best_score = e.BestScore }));
                next = events.MoveNextAsync().AsTask();
            }
        }
        finally
        {
            // An async iterator cannot be disposed while a MoveNext is pending (it would throw over the real error): stop it first.
            watching.Cancel();
            try { await next; } catch (Exception) { /* the watch was stopped on purpose */ }
            await events.DisposeAsync();
        }
        var result = await client.AwaitResultAsync(jobId, http.RequestAborted);
        var (reasoning, content) = Split(result.Winner.Text);
        await Send(Chunk(new { reasoning_content = reasoning, content }, null));
        await Send(Chunk(new { }, FinishReason(result.Winner), Extension(result, chat.ReturnCandidates)));
        await http.Response.WriteAsync("data: [DONE]\n\n", http.RequestAborted);
    }

    private static object Completion(JobResult result, ChatRequest chat, GatewayOptions options)
    {
        var winner = result.Winner;
        var (reasoning, content) = Split(winner.Text);
        int reasoningTokens = result.Candidates.Sum(c => c.ThinkingTokens);
        int completionTokens = result.Candidates.Sum(c => c.ResponseTokens);
        return new
        {
            id = "chatcmpl-" + result.JobId,
            @object = "chat.completion",
            created = DateTimeOffset.UtcNow.ToUnixTimeSeconds(),
            model = options.ModelId,
            choices = new[] { new { index = 0, message = new { role = "assistant", content, reasoning_content = reasoning }, finish_reason = FinishReason(winner) } },
            usage = new
            {
                prompt_tokens = winner.PromptTokens,
                completion_tokens = completionTokens,
                total_tokens = winner.PromptTokens + completionTokens,
                completion_tokens_details = new { reasoning_tokens = reasoningTokens },
            },
            metastone = Extension(result, chat.ReturnCandidates),
        };
    }

    private static object Extension(JobResult result, bool candidates) => new
    {
        job_id = result.JobId,
        k = result.K,
        selection = result.Selection.Name(),
        winner_index = result.WinnerIndex,
        score = result.Winner.Score,
        answer = result.Winner.Answer,
        candidates = candidates
            ? result.Candidates.Select(c => new { index = c.Index, seed = c.Seed, score = c.Score, answer = c.Answer, step_scores = c.StepScores, finish_reason = c.FinishReason.Name() }).ToArray()
            : null,
    };

    // OpenAI's finish reasons are stop and length: a cancelled candidate never wins a completed job, and is reported as stop.
    private static string FinishReason(CandidateResult c) => (c.FinishReason == CandidateFinishReason.Length ? CandidateFinishReason.Length : CandidateFinishReason.Stop).Name();

    /// <summary>The thinking (inside <c>&lt;think&gt;…&lt;/think&gt;</c>) and the answer after it.</summary>
    public static (string Reasoning, string Content) Split(string text)
    {
        const string close = "</think>";
        int end = text.IndexOf(close, StringComparison.Ordinal);
        if (end < 0) return (text.Replace("<think>", "", StringComparison.Ordinal).Trim(), "");
        return (text[..end].Replace("<think>", "", StringComparison.Ordinal).Trim(), text[(end + close.Length)..].Trim());
    }
}

/// <summary>A field of a chat request with the wrong type or value.</summary>
public sealed class ChatRequestException(string message, string? param) : Exception(message)
{
    public string? Param => param;
}

/// <summary>The fields of <c>POST /v1/chat/completions</c> the cluster uses, mapped onto one <see cref="JobRequest"/>.</summary>
public sealed record ChatRequest(string? Model, JobRequest Job, bool Stream, bool ReturnCandidates)
{
    public static ChatRequest Parse(JsonNode? body)
    {
        if (body is not JsonObject o) throw new ChatRequestException("the body must be a JSON object", null);
        string? model = Str(o, "model");
        if (o["messages"] is not JsonArray messages || messages.Count == 0) throw new ChatRequestException("'messages' must be a non-empty array", "messages");
        // The policy answers one user question: the last user message is the prompt (system and earlier turns are not used).
        var user = messages.OfType<JsonObject>().LastOrDefault(m => Str(m, "role") == "user")
            ?? throw new ChatRequestException("'messages' has no message with role 'user'", "messages");
        string prompt = user["content"] switch
        {
            JsonValue v when v.TryGetValue<string>(out var s) => s,
            JsonArray parts => string.Concat(parts.OfType<JsonObject>().Where(p => Str(p, "type") == "text").Select(p => Str(p, "text"))),
            _ => throw new ChatRequestException("the user message's 'content' must be a string or text parts", "messages"),
        };
        var extension = o["metastone"] as JsonObject;
        int? maxTokens = Int(o, "max_completion_tokens") ?? Int(o, "max_tokens");
        var job = new JobRequest
        {
            Prompt = prompt,
            Effort = Choice(o, "reasoning_effort", RequestText.ParseEffort),
            K = Int(o, "n"),
            Sampling = new SamplingSettings
            {
                MaxNewTokens = maxTokens ?? SamplingDefaults.MaxNewTokens,
                Temperature = Num(o, "temperature") ?? SamplingDefaults.Temperature,
                TopP = Num(o, "top_p") ?? SamplingDefaults.TopP,
                ThinkingBudget = extension is null ? null : Int(extension, "thinking_budget"),
            },
            Seed = Long(o, "seed") ?? Random.Shared.NextInt64(0, 1L << 40),
            Selection = (extension is null ? null : Choice(extension, "selection", RequestText.ParseSelection)) ?? WinnerSelection.BestOfN,
        };
        // n = 1 is OpenAI's default and means "one answer": here k comes from reasoning_effort then.
        if (job.K == 1 && job.Effort is not null) job = job with { K = null };
        return new ChatRequest(model, job, Bool(o, "stream") ?? false, extension is not null && (Bool(extension, "return_candidates") ?? false));
    }

    private static T? Get<T>(JsonObject o, string name, string expected) where T : struct
    {
        if (o[name] is null) return null;
        if (o[name] is JsonValue v && v.TryGetValue<T>(out var value)) return value;
        throw new ChatRequestException($"'{name}' must be {expected}", name);
    }

    private static string? Str(JsonObject o, string name)
    {
        if (o[name] is null) return null;
        if (o[name] is JsonValue v && v.TryGetValue<string>(out var s)) return s;
        throw new ChatRequestException($"'{name}' must be a string", name);
    }

    /// <summary>A word of the request contract (effort, selection) read by its one parser; an unknown word names the field.</summary>
    private static T? Choice<T>(JsonObject o, string name, Func<string, T> parse) where T : struct
    {
        if (Str(o, name) is not { } text) return null;
        try { return parse(text); }
        catch (ArgumentException e) { throw new ChatRequestException(e.Message, name); }
    }

    private static int? Int(JsonObject o, string name)
    {
        var d = Get<double>(o, name, "an integer");
        if (d is null) return null;
        if (d != Math.Floor(d.Value) || d is < int.MinValue or > int.MaxValue) throw new ChatRequestException($"'{name}' must be an integer", name);
        return (int)d.Value;
    }

    private static long? Long(JsonObject o, string name)
    {
        var d = Get<double>(o, name, "an integer");
        return d is null ? null : d == Math.Floor(d.Value) ? (long)d.Value : throw new ChatRequestException($"'{name}' must be an integer", name);
    }

    private static double? Num(JsonObject o, string name) => Get<double>(o, name, "a number");
    private static bool? Bool(JsonObject o, string name) => Get<bool>(o, name, "true or false");
}
