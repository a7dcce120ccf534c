using System.Net;
using System.Net.Sockets;
using MetaStone.Client;
using MetaStone.Contracts;

namespace MetaStone.Cli.Cluster;

/// <summary>Shared plumbing of the cluster verbs: turning cluster errors into one clear line and an exit code.</summary>
public static class ClusterVerb
{
    /// <summary>Runs a verb body; a bad request or setting is exit code 2, a failed or unknown job 1.</summary>
    public static async Task<int> RunAsync(Func<Task<int>> body)
    {
        try { return await body(); }
        catch (ArgumentException e) { return Fail(e.Message, 2); }
        catch (ClusterBusyException e) { return Fail(e.Message, BusyExitCode); }
        catch (KeyNotFoundException e) { return Fail(e.Message, 1); }
        catch (OperationCanceledException e) { return Fail(e.Message, 130); }
        catch (InvalidOperationException e) { return Fail(e.Message, 1); }
        catch (DirectoryNotFoundException e) { return Fail(e.Message, 2); }
        catch (Exception e) when (MetaStoneClient.IsTransient(e)) { return Fail($"the cluster did not answer: {e.Message}", 1); }
    }

    /// <summary>Exit code of a submission refused by admission control: sysexits' EX_TEMPFAIL, "try again later".</summary>
    public const int BusyExitCode = 75;

    private static int Fail(string message, int code)
    {
        Console.Error.WriteLine($"error: {message}");
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

    public static int FreeLoopbackPort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
