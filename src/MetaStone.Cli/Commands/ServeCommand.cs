using System.CommandLine;
using MetaStone.Cli.Cluster;
using MetaStone.Client;
using MetaStone.Gateway;

namespace MetaStone.Cli.Commands;

/// <summary>
/// <c>metastone serve [--cluster host:port] [--urls http://127.0.0.1:8000] [--api-key KEY]</c>: the OpenAI-compatible gateway,
/// over an embedded silo with the shipped model by default, or in front of a cluster.
/// </summary>
public sealed class ServeCommand : ICliVerb
{
    public const string ApiKeyEnvironmentVariable = "METASTONE_API_KEY";

    public static Command Create()
    {
        var cluster = new ClusterCliOptions();
        var urls = new Option<string>("--urls") { Description = "Where to listen (loopback by default).", DefaultValueFactory = _ => "http://127.0.0.1:8000" };
        var apiKey = new Option<string?>("--api-key") { Description = $"Require 'Authorization: Bearer KEY' (default ${ApiKeyEnvironmentVariable}; none = open)." };
        var model = new Option<string?>("--model") { Description = "Model directory of the embedded silo (default: models/metastone-tiny)." };
        var modelId = new Option<string?>("--model-id") { Description = "The model id clients send (default: the model directory's name, or 'metastone' in front of a cluster)." };
        var device = new Option<string>("--device") { Description = "Device of the embedded silo: cpu, cuda:N.", DefaultValueFactory = _ => "cpu" };
        var dashboardPort = new Option<int>("--dashboard-port") { Description = "Embedded silo: serve Orleans' dashboard on http://127.0.0.1:PORT/ (0 = none).", DefaultValueFactory = _ => 0 };
        var command = new Command("serve", "OpenAI-compatible HTTP gateway: GET /v1/models, POST /v1/chat/completions (stream too), POST /v1/completions, GET /health, /metrics, /openapi/v1.json.")
        {
            urls, apiKey, model, modelId, device, dashboardPort,
        };
        cluster.AddTo(command);
        command.SetAction((parse, cancellationToken) => ClusterVerb.RunAsync(parse, async () =>
        {
            EmbeddedCluster? embedded = null;
            MetaStoneClient client;
            string id;
            if (cluster.Connection(parse) is { } connection)
            {
                if (parse.GetValue(dashboardPort) > 0)
                    throw new ArgumentException("--dashboard-port is for the embedded silo; in front of a cluster, the silos serve the dashboard (metastone silo --dashboard-port)");
                client = await MetaStoneClient.ConnectAsync(connection, cancellationToken);
                id = parse.GetValue(modelId) ?? "metastone";
            }
            else
            {
                embedded = await EmbeddedCluster.StartAsync(parse.GetValue(model), parse.GetValue(device)!, maxBatch: 32, cancellationToken,
                    dashboardPort: parse.GetValue(dashboardPort));
                client = embedded.Client;
                id = parse.GetValue(modelId) ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(embedded.Model));
            }
            try
            {
                string? key = parse.GetValue(apiKey) ?? (Environment.GetEnvironmentVariable(ApiKeyEnvironmentVariable) is { Length: > 0 } k ? k : null);
                await using var app = OpenAiGateway.Build(client, new GatewayOptions { ModelId = id, Urls = parse.GetValue(urls)!, ApiKey = key });
                await app.StartAsync(cancellationToken);
                string dashboard = parse.GetValue(dashboardPort) is > 0 and var p ? $", dashboard http://127.0.0.1:{p}/" : "";
                Console.WriteLine($"metastone serve ready: {string.Join(", ", app.Urls)} (model '{id}'{(key is null ? "" : ", API key required")}){dashboard}");
                // SIGTERM reaches the web host's own console lifetime (which stops the application) rather than this verb's token:
                // wait for either, or `docker stop` / `kill` left serve running until SIGKILL.
                using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, app.Lifetime.ApplicationStopping);
                try { await Task.Delay(Timeout.Infinite, stop.Token); }
                catch (OperationCanceledException) { }
                await app.StopAsync(CancellationToken.None);
                return ExitCodes.Ok;
            }
            finally
            {
                if (embedded is not null) await embedded.DisposeAsync();
                else await client.DisposeAsync();
            }
        }));
        return command;
    }
}
