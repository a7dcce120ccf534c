using System.CommandLine;
using MetaStone.Bench;
using MetaStone.Cli.Cluster;
using MetaStone.Client;

namespace MetaStone.Cli.Commands;

/// <summary>
/// <c>metastone bench gateway [--cluster host:port] [--json]</c>: the OpenAI-compatible gateway's cost, as ratios measured in one run on one
/// cluster (the embedded silo with the shipped model by default): one k = 8 job through HTTP vs through the Orleans client, and
/// throughput of 8 concurrent HTTP clients with streaming on vs off.
/// </summary>
/// <remarks>A subcommand of <see cref="BenchCommand"/>.</remarks>
internal static class BenchGatewayCommand
{
    public static Command Create()
    {
        var cluster = new ClusterCliOptions();
        var model = new Option<string?>("--model") { Description = "Model of the embedded silo (default: models/metastone-tiny)." };
        var k = new Option<int>("--k") { Description = "Candidates of the overhead job.", DefaultValueFactory = _ => 8 };
        var pairs = new Option<int>("--pairs") { Description = "Overhead: interleaved HTTP / Orleans runs of the same job.", DefaultValueFactory = _ => 10 };
        var clients = new Option<int>("--clients") { Description = "Throughput: concurrent HTTP clients.", DefaultValueFactory = _ => 8 };
        var perClient = new Option<int>("--jobs-per-client") { Description = "Throughput: jobs each client runs one after another per round.", DefaultValueFactory = _ => 5 };
        var throughputK = new Option<int>("--throughput-k") { Description = "Throughput: candidates per job.", DefaultValueFactory = _ => 2 };
        var roundPairs = new Option<int>("--round-pairs") { Description = "Throughput: pairs of rounds, one streamed and one not, in alternating order.", DefaultValueFactory = _ => 6 };
        var maxNew = new Option<int>("--max-new-tokens") { DefaultValueFactory = _ => 256 }; // the benchmark's workload, not a sampling default
        var engine = new Option<string>("--engine")
        {
            Description = "Embedded silo's engine: model (the real one), or instant (made-up candidates at once: isolates the HTTP and orchestration cost).",
            DefaultValueFactory = _ => "model",
        };
        var json = JsonOutput.CreateOption();
        var command = new Command("gateway", "HTTP gateway vs Orleans client (one k = 8 job), and streaming on vs off under 8 concurrent clients: ratios from one run.")
        {
            model, engine, k, pairs, clients, perClient, throughputK, roundPairs, maxNew, json,
        };
        cluster.AddTo(command);
        command.SetAction((parse, ct) => ClusterVerb.RunAsync(parse, async () =>
        {
            var settings = new GatewayBenchSettings
            {
                K = parse.GetValue(k), Pairs = parse.GetValue(pairs), Clients = parse.GetValue(clients), JobsPerClient = parse.GetValue(perClient),
                ThroughputK = parse.GetValue(throughputK), RoundPairs = parse.GetValue(roundPairs), MaxNewTokens = parse.GetValue(maxNew),
            };
            settings.Validate();
            EmbeddedCluster? embedded = null;
            MetaStoneClient client;
            string description;
            if (cluster.Connection(parse) is { } connection)
            {
                client = await MetaStoneClient.ConnectAsync(connection, ct);
                description = $"Redis {connection.Redis}";
            }
            else
            {
                // Room for every concurrent client's job: admission control is not what is measured.
                string engineName = parse.GetValue(engine)!;
                if (engineName is not ("model" or "instant")) throw new ArgumentException($"--engine must be model or instant (got '{engineName}')");
                embedded = await EmbeddedCluster.StartAsync(parse.GetValue(model), "cpu", maxBatch: 32, ct, maxRunningJobs: 0, engine: engineName);
                client = embedded.Client;
                description = engineName == "model"
                    ? $"embedded silo, {Path.GetFileName(Path.TrimEndingDirectorySeparator(embedded.Model))}, cpu, 32 batch slots"
                    : "embedded silo, instant engine (no model: HTTP + orchestration only)";
            }
            try
            {
                var report = await GatewayBenchmark.RunWithGatewayAsync(client, description, settings, line => Console.Error.WriteLine(line), ct);
                if (parse.GetValue(json)) JsonOutput.Write(parse.InvocationConfiguration.Output, report);
                else foreach (var line in report.ToLines()) parse.InvocationConfiguration.Output.WriteLine(line);
                return ExitCodes.Ok; // a missed target is a finding to report, not a failure of the run
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
