using System.CommandLine;
using MetaStone.Cli.Cluster;
using MetaStone.Client;

namespace MetaStone.Cli.Commands;

/// <summary><c>metastone submit "…" --cluster host:port [--effort|--k] [--json]</c>: queues a job and prints its id.</summary>
public sealed class SubmitCommand : ICliVerb
{
    public static Command Create()
    {
        var job = new JobCliOptions();
        var cluster = new ClusterCliOptions();
        var json = JsonOutput.CreateOption();
        var command = new Command("submit", "Submit a job to a cluster and print its id (the job runs on even if this command exits).");
        job.AddTo(command);
        cluster.AddTo(command);
        command.Add(json);
        command.SetAction((parse, ct) => ClusterVerb.RunAsync(parse, async () =>
        {
            await using var client = await MetaStoneClient.ConnectAsync(cluster.RequiredConnection(parse), ct);
            string id = await client.SubmitAsync(job.Request(parse), cancellationToken: ct);
            if (parse.GetValue(json)) JsonOutput.Write(parse.InvocationConfiguration.Output, await client.GetStatusAsync(id, ct));
            else parse.InvocationConfiguration.Output.WriteLine(id);
            return 0;
        }));
        return command;
    }
}

/// <summary><c>metastone watch JOB --cluster host:port</c>: live progress until the job ends, then the result.</summary>
public sealed class WatchCommand : ICliVerb
{
    public static Command Create()
    {
        var jobId = new Argument<string>("job") { Description = "Job id." };
        var cluster = new ClusterCliOptions();
        var json = JsonOutput.CreateOption();
        var command = new Command("watch", "Follow a job's progress (candidates started / finished with scores, best so far) until it ends.") { jobId, json };
        cluster.AddTo(command);
        command.SetAction((parse, ct) => ClusterVerb.RunAsync(parse, async () =>
        {
            await using var client = await MetaStoneClient.ConnectAsync(cluster.RequiredConnection(parse), ct);
            string id = parse.GetValue(jobId)!;
            if (parse.GetValue(json))
            {
                // One JSON document per event, one per line (JSON Lines), so a script can follow along.
                await foreach (var e in client.WatchAsync(id, ct))
                    parse.InvocationConfiguration.Output.WriteLine(System.Text.Json.JsonSerializer.Serialize(e, JsonOutput.SerializerOptions).ReplaceLineEndings(""));
                return 0;
            }
            await ClusterVerb.WatchToStderrAsync(client, id, ct);
            var result = await client.GetResultAsync(id, ct);
            if (result is not null) JobReport.WriteResult(parse.InvocationConfiguration.Output, result);
            return result is null ? 1 : 0;
        }));
        return command;
    }
}

/// <summary><c>metastone status JOB --cluster host:port [--json]</c>.</summary>
public sealed class StatusCommand : ICliVerb
{
    public static Command Create()
    {
        var jobId = new Argument<string>("job") { Description = "Job id." };
        var cluster = new ClusterCliOptions();
        var json = JsonOutput.CreateOption();
        var command = new Command("status", "Show a job's state, candidates finished and best score so far.") { jobId, json };
        cluster.AddTo(command);
        command.SetAction((parse, ct) => ClusterVerb.RunAsync(parse, async () =>
        {
            await using var client = await MetaStoneClient.ConnectAsync(cluster.RequiredConnection(parse), ct);
            var status = await client.GetStatusAsync(parse.GetValue(jobId)!, ct);
            if (parse.GetValue(json)) JsonOutput.Write(parse.InvocationConfiguration.Output, status);
            else JobReport.WriteStatus(parse.InvocationConfiguration.Output, status);
            return 0;
        }));
        return command;
    }
}

/// <summary><c>metastone result JOB --cluster host:port [--wait] [--json]</c>.</summary>
public sealed class ResultCommand : ICliVerb
{
    public static Command Create()
    {
        var jobId = new Argument<string>("job") { Description = "Job id." };
        var wait = new Option<bool>("--wait") { Description = "Wait for the job to end instead of failing while it runs." };
        var cluster = new ClusterCliOptions();
        var json = JsonOutput.CreateOption();
        var command = new Command("result", "Print a finished job's answer, score and candidate table.") { jobId, wait, json };
        cluster.AddTo(command);
        command.SetAction((parse, ct) => ClusterVerb.RunAsync(parse, async () =>
        {
            await using var client = await MetaStoneClient.ConnectAsync(cluster.RequiredConnection(parse), ct);
            string id = parse.GetValue(jobId)!;
            var result = parse.GetValue(wait) ? await client.AwaitResultAsync(id, ct) : await client.GetResultAsync(id, ct);
            if (result is null)
            {
                var status = await client.GetStatusAsync(id, ct);
                throw new InvalidOperationException($"job {id} has no result: it is {status.State.ToString().ToLowerInvariant()} ({status.Finished}/{status.K} candidates){(status.Error is null ? "" : ": " + status.Error)}; use --wait to wait for it");
            }
            if (parse.GetValue(json)) JsonOutput.Write(parse.InvocationConfiguration.Output, result);
            else JobReport.WriteResult(parse.InvocationConfiguration.Output, result);
            return 0;
        }));
        return command;
    }
}

/// <summary><c>metastone cancel JOB --cluster host:port</c>: stops every candidate of the job and frees their batch slots.</summary>
public sealed class CancelCommand : ICliVerb
{
    public static Command Create()
    {
        var jobId = new Argument<string>("job") { Description = "Job id." };
        var reason = new Option<string>("--reason") { DefaultValueFactory = _ => "cancelled from the command line" };
        var cluster = new ClusterCliOptions();
        var json = JsonOutput.CreateOption();
        var command = new Command("cancel", "Cancel a running job.") { jobId, reason, json };
        cluster.AddTo(command);
        command.SetAction((parse, ct) => ClusterVerb.RunAsync(parse, async () =>
        {
            await using var client = await MetaStoneClient.ConnectAsync(cluster.RequiredConnection(parse), ct);
            var status = await client.CancelAsync(parse.GetValue(jobId)!, parse.GetValue(reason)!, ct);
            if (parse.GetValue(json)) JsonOutput.Write(parse.InvocationConfiguration.Output, status);
            else JobReport.WriteStatus(parse.InvocationConfiguration.Output, status);
            return 0;
        }));
        return command;
    }
}
