using System.CommandLine;
using MetaStone.Cli.Cluster;
using MetaStone.Cli.Training;
using MetaStone.Client;
using MetaStone.Silo;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Orleans;

namespace MetaStone.Cli.Commands;

/// <summary>
/// <c>metastone ask "…" [--effort low|medium|high | --k N] [--budget T] [--cluster REDIS] [--json]</c>: one answer by
/// test-time scaling. With no cluster it runs an embedded single-silo cluster on loopback with the default model.
/// </summary>
public sealed class AskCommand : ICliVerb
{
    public static Command Create()
    {
        var job = new JobCliOptions();
        var cluster = new ClusterCliOptions();
        var model = new Option<string?>("--model") { Description = "Model directory of the embedded silo (default: models/metastone-tiny)." };
        var device = new Option<string>("--device") { Description = "Device of the embedded silo: cpu, cuda:N.", DefaultValueFactory = _ => "cpu" };
        var json = JsonOutput.CreateOption();
        var command = new Command("ask", "Answer a question with k candidates; the best by SPRM score wins. Live progress on stderr.");
        job.AddTo(command);
        cluster.AddTo(command);
        command.Add(model);
        command.Add(device);
        command.Add(json);
        command.SetAction((parse, cancellationToken) => ClusterVerb.RunAsync(async () =>
        {
            var request = job.Request(parse);
            IHost? embedded = null;
            MetaStoneClient client;
            if (cluster.Connection(parse) is { } connection)
            {
                client = await MetaStoneClient.ConnectAsync(connection, cancellationToken);
            }
            else
            {
                string dir = parse.GetValue(model) ?? RepoPaths.DefaultModel;
                if (!Directory.Exists(dir) || !File.Exists(Path.Combine(dir, "config.json")))
                    throw new ArgumentException($"model not found: {dir} (train the tiny model with 'metastone train', pass --model DIR, or name a cluster with --cluster)");
                Console.Error.WriteLine($"starting an embedded silo with {dir} …");
                embedded = await MetaStoneSilo.StartAsync(new SiloSettings
                {
                    Name = "embedded", Model = dir, Devices = parse.GetValue(device)!, ClusterId = "embedded-" + Environment.ProcessId,
                    SiloPort = ClusterVerb.FreeLoopbackPort(), GatewayPort = ClusterVerb.FreeLoopbackPort(),
                }, logging => { }, cancellationToken);
                client = MetaStoneClient.FromGrainFactory(embedded.Services.GetRequiredService<IClusterClient>());
            }
            try
            {
                string jobId = await client.SubmitAsync(request, cancellationToken: cancellationToken);
                Console.Error.WriteLine($"job {jobId}");
                try
                {
                    await ClusterVerb.WatchToStderrAsync(client, jobId, cancellationToken);
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    await client.CancelAsync(jobId, "interrupted at the terminal", CancellationToken.None);
                    throw new OperationCanceledException($"job {jobId} cancelled");
                }
                var result = await client.AwaitResultAsync(jobId, cancellationToken);
                if (parse.GetValue(json)) JsonOutput.Write(parse.InvocationConfiguration.Output, result);
                else JobReport.WriteResult(parse.InvocationConfiguration.Output, result);
                return 0;
            }
            finally
            {
                await client.DisposeAsync();
                if (embedded is not null)
                {
                    await embedded.StopAsync(TimeSpan.FromSeconds(5));
                    embedded.Dispose();
                }
            }
        }));
        return command;
    }
}
