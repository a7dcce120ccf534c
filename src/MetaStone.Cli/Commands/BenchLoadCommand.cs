using System.CommandLine;
using MetaStone.Bench;
using MetaStone.Cli.Cluster;
using MetaStone.Cli.Training;

namespace MetaStone.Cli.Commands;

/// <summary>
/// <c>metastone bench load [--cluster host:port | --silos N] [--clients 8] [--jobs-per-client 25] [--k 8] [--json]</c>: many clients
/// at once against a cluster (a running one, or silo processes with the real model and a private redis-server started for the run).
/// </summary>
/// <remarks>A subcommand of <see cref="BenchCommand"/>.</remarks>
internal static class BenchLoadCommand
{
    public static Command Create()
    {
        var cluster = new ClusterCliOptions();
        var silos = new Option<int>("--silos") { Description = "Without --cluster: silo processes to start (real model, private redis-server).", DefaultValueFactory = _ => 2 };
        var model = new Option<string?>("--model") { Description = "Without --cluster: model of the silos (default: models/metastone-tiny)." };
        var clients = new Option<int>("--clients") { Description = "Client connections, each with its jobs in flight at once.", DefaultValueFactory = _ => 8 };
        var perClient = new Option<int>("--jobs-per-client") { DefaultValueFactory = _ => 25 };
        var k = new Option<int>("--k") { Description = "Candidates per job.", DefaultValueFactory = _ => 8 };
        var budget = new Option<int>("--budget") { Description = "Thinking budget in tokens.", DefaultValueFactory = _ => 200 };
        var maxNew = new Option<int>("--max-new-tokens") { DefaultValueFactory = _ => 512 }; // the issue-11 load case, not a sampling default
        var minutes = new Option<double>("--deadline-minutes") { Description = "Jobs not ended by then count as lost.", DefaultValueFactory = _ => 30 };
        var json = JsonOutput.CreateOption();
        var command = new Command("load", "Concurrent clients against a cluster: jobs/s, p50/p99 latency, failed, refused (busy) and lost jobs.")
        {
            silos, model, clients, perClient, k, budget, maxNew, minutes, json,
        };
        cluster.AddTo(command);
        command.SetAction((parse, ct) => ClusterVerb.RunAsync(parse, async () =>
        {
            var settings = new LoadSettings
            {
                Clients = parse.GetValue(clients), JobsPerClient = parse.GetValue(perClient), K = parse.GetValue(k),
                ThinkingBudget = parse.GetValue(budget), MaxNewTokens = parse.GetValue(maxNew), Deadline = TimeSpan.FromMinutes(parse.GetValue(minutes)),
            };
            settings.Validate();
            await using var group = new SiloProcessGroup();
            var connection = cluster.Connection(parse);
            connection ??= await LoadBenchmark.StartLocalClusterAsync(group, parse.GetValue(silos),
                Path.GetFullPath(parse.GetValue(model) ?? RepoPaths.DefaultModel), line => Console.Error.WriteLine(line));
            var report = await LoadBenchmark.RunAsync(connection, settings, line => Console.Error.WriteLine(line), ct);
            if (parse.GetValue(json)) JsonOutput.Write(parse.InvocationConfiguration.Output, report);
            else foreach (var line in report.ToLines()) parse.InvocationConfiguration.Output.WriteLine(line);
            return report.Failed + report.Lost == 0 ? ExitCodes.Ok : ExitCodes.Failed;
        }));
        return command;
    }
}
