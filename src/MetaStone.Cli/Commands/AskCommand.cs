using System.CommandLine;
using MetaStone.Cli.Cluster;
using MetaStone.Client;

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
        var dashboardPort = new Option<int>("--dashboard-port") { Description = "Embedded silo: serve Orleans' dashboard on http://127.0.0.1:PORT/ while the job runs (0 = none).", DefaultValueFactory = _ => 0 };
        var command = new Command("ask", "Answer a question with k candidates; the best by SPRM score wins. Live progress on stderr.");
        job.AddTo(command);
        cluster.AddTo(command);
        command.Add(model);
        command.Add(device);
        command.Add(json);
        command.Add(dashboardPort);
        command.SetAction((parse, cancellationToken) => ClusterVerb.RunAsync(parse, async () =>
        {
            var request = job.Request(parse);
            EmbeddedCluster? embedded = null;
            MetaStoneClient client;
            if (cluster.Connection(parse) is { } connection)
                client = await MetaStoneClient.ConnectAsync(connection, cancellationToken);
            else
            {
                embedded = await EmbeddedCluster.StartAsync(parse.GetValue(model), parse.GetValue(device)!, maxBatch: 32, cancellationToken,
                    dashboardPort: parse.GetValue(dashboardPort));
                client = embedded.Client;
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
                // The watch above ended at the job's terminal event: fetch the result without following the job a second time.
                var result = await client.EndedJobResultAsync(jobId, cancellationToken);
                if (parse.GetValue(json)) JsonOutput.Write(parse.InvocationConfiguration.Output, result);
                else JobReport.WriteResult(parse.InvocationConfiguration.Output, result);
                return 0;
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
