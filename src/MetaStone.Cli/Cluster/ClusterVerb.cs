using System.CommandLine;
using MetaStone.Client;
using MetaStone.Contracts;

namespace MetaStone.Cli.Cluster;

/// <summary>Shared plumbing of the cluster verbs: turning cluster errors into one clear line and an exit code.</summary>
public static class ClusterVerb
{
    /// <summary>
    /// Runs a verb body and maps its errors to one line on stderr and an exit code of <see cref="ExitCodes"/>. With <c>--json</c>
    /// set, the error is also the one JSON document on stdout (<c>{"error": {"message": …, "exitCode": …}}</c>), so a script
    /// that parses stdout gets JSON either way.
    /// </summary>
    public static async Task<int> RunAsync(ParseResult parse, Func<Task<int>> body)
    {
        try { return await body(); }
        catch (ArgumentException e) { return Fail(parse, e.Message, ExitCodes.BadInput); }
        catch (ClusterBusyException e) { return Fail(parse, e.Message, ExitCodes.Busy); }
        catch (KeyNotFoundException e) { return Fail(parse, e.Message, ExitCodes.Failed); }
        catch (OperationCanceledException e) { return Fail(parse, e.Message, ExitCodes.Interrupted); }
        catch (InvalidOperationException e) { return Fail(parse, e.Message, ExitCodes.Failed); }
        catch (DirectoryNotFoundException e) { return Fail(parse, e.Message, ExitCodes.BadInput); }
        catch (Exception e) when (ClusterFaults.IsSiloLoss(e)) { return Fail(parse, $"the cluster did not answer: {e.Message}", ExitCodes.Failed); }
    }

    private static int Fail(ParseResult parse, string message, int code)
    {
        message = CliRootCommand.CleanMessage(message);
        Console.Error.WriteLine($"error: {message}");
        if (parse.CommandResult.Command.Options.FirstOrDefault(o => o.Name == "--json") is Option<bool> json && parse.GetValue(json))
            JsonOutput.Write(parse.InvocationConfiguration.Output, new { error = new { message, exitCode = code } });
        return code;
    }

    /// <summary>Prints progress events to stderr until the job ends (stdout stays for the answer or JSON).</summary>
    public static async Task WatchToStderrAsync(MetaStoneClient client, string jobId, CancellationToken cancellationToken)
    {
        await foreach (var e in client.WatchAsync(jobId, cancellationToken))
        {
            if (e.Kind == ProgressKind.CandidateStarted && e.K > 8) continue; // k = 32 would print 32 "started" lines
            Console.Error.WriteLine(JobReport.ProgressLine(e));
        }
    }

    public static int FreeLoopbackPort() => MetaStone.Bench.LoopbackPort.Free();
}
