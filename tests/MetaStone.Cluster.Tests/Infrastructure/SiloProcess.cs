using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace MetaStone.Cluster.Tests.Infrastructure;

/// <summary>The real MetaStone.Silo executable in its own process, clustered through Redis.</summary>
public sealed class SiloProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _output = new();
    public string Name { get; }
    public int SiloPort { get; }
    public int GatewayPort { get; }

    private SiloProcess(Process process, string name, int siloPort, int gatewayPort)
    {
        _process = process;
        Name = name;
        SiloPort = siloPort;
        GatewayPort = gatewayPort;
    }

    public bool HasExited => _process.HasExited;
    public int ExitCode => _process.ExitCode;
    public string Output => string.Join('\n', _output);

    /// <summary>
    /// Candidates this silo's engines generated (its replica grain logs one line each), of one job or of all. A process killed
    /// with -9 may not have flushed its last lines, so for a killed silo this is a lower bound.
    /// </summary>
    public int GeneratedCandidates(string? jobId = null) =>
        _output.Count(line => line.Contains("generated candidate ", StringComparison.Ordinal)
            && (jobId is null || line.Contains($" of job {jobId} (", StringComparison.Ordinal)));

    public static string SiloDll()
    {
        string configuration = AppContext.BaseDirectory.Contains("/Release/", StringComparison.Ordinal) ? "Release" : "Debug";
        string dll = Path.Combine(TestModel.RepoRoot(), "src", "MetaStone.Silo", "bin", configuration, "net10.0", "linux-x64", "MetaStone.Silo.dll");
        if (!File.Exists(dll)) throw new FileNotFoundException($"the silo executable is not built: {dll}");
        return dll;
    }

    public static string CliDll()
    {
        string configuration = AppContext.BaseDirectory.Contains("/Release/", StringComparison.Ordinal) ? "Release" : "Debug";
        string dll = Path.Combine(TestModel.RepoRoot(), "src", "MetaStone.Cli", "bin", configuration, "net10.0", "linux-x64", "metastone.dll");
        if (!File.Exists(dll)) throw new FileNotFoundException($"the metastone CLI is not built: {dll}");
        return dll;
    }

    /// <summary>Starts <c>metastone silo</c> (the CLI verb, not the silo executable) with the given ports and extra arguments.</summary>
    public static Task<SiloProcess> StartCliAsync(string name, string redis, string clusterId, int siloPort, int gatewayPort, params string[] extraArgs)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in new[] { CliDll(), "silo", "--redis", redis, "--cluster-id", clusterId, "--name", name, "--model", TestModel.Directory,
                     "--silo-port", siloPort.ToString(), "--gateway-port", gatewayPort.ToString(), "--max-batch", "8", "--threads", "1" }.Concat(extraArgs))
            info.ArgumentList.Add(arg);
        info.Environment["DOTNET_gcServer"] = "0";
        return LaunchAsync(info, name, siloPort, gatewayPort, waitReady: true);
    }

    /// <summary>Starts a silo; with <paramref name="waitReady"/> returns once it printed its ready line (models loaded, joined).</summary>
    public static Task<SiloProcess> StartAsync(string name, string redis, string clusterId, IReadOnlyDictionary<string, string>? extra = null, bool waitReady = true)
        => StartAsync(name, redis, clusterId, FreePorts.Next(), FreePorts.Next(), extra, waitReady);

    /// <summary>Starts a silo on the given ports.</summary>
    public static Task<SiloProcess> StartAsync(string name, string redis, string clusterId, int siloPort, int gatewayPort, IReadOnlyDictionary<string, string>? extra = null, bool waitReady = true)
    {
        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        info.ArgumentList.Add(SiloDll());
        var env = new Dictionary<string, string>
        {
            ["MetaStone__Name"] = name,
            ["MetaStone__Model"] = TestModel.Directory,
            ["MetaStone__Redis"] = redis,
            ["MetaStone__ClusterId"] = clusterId,
            ["MetaStone__ServiceId"] = clusterId,
            ["MetaStone__SiloPort"] = siloPort.ToString(),
            ["MetaStone__GatewayPort"] = gatewayPort.ToString(),
            ["MetaStone__FastFailureDetection"] = "true",
            ["MetaStone__ComputeThreads"] = "1",
            ["MetaStone__MaxBatch"] = "8",
            ["MetaStone__MaxSequenceLength"] = "256",
            // Paces the random tiny model like a big one (≥ 10 ms a step, 2 s for a 200-token candidate): the cancel,
            // drain and fail-over tests act on a job while it runs, and at the engine's own speed (~1 ms a step) a job
            // could end before a client process had started or a heartbeat had reported it busy.
            ["MetaStone__MinDecodeStepMilliseconds"] = "10",
            ["DOTNET_gcServer"] = "0",
            // One Debug line per generated candidate: what GeneratedCandidates counts.
            ["Logging__LogLevel__MetaStone.Grains.ReplicaGrain"] = "Debug",
        };
        foreach (var (k, v) in extra ?? new Dictionary<string, string>()) env[k] = v;
        foreach (var (k, v) in env) info.Environment[k] = v;
        return LaunchAsync(info, name, siloPort, gatewayPort, waitReady);
    }

    private static async Task<SiloProcess> LaunchAsync(ProcessStartInfo info, string name, int siloPort, int gatewayPort, bool waitReady)
    {
        var process = Process.Start(info) ?? throw new InvalidOperationException("the silo process did not start");
        var silo = new SiloProcess(process, name, siloPort, gatewayPort);
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            silo._output.Enqueue(e.Data);
            if (e.Data.Contains(" ready: ", StringComparison.Ordinal)) ready.TrySetResult();
        };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) silo._output.Enqueue(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (waitReady)
        {
            var exited = process.WaitForExitAsync();
            var first = await Task.WhenAny(ready.Task, exited, Task.Delay(TimeSpan.FromSeconds(90)));
            if (first != ready.Task)
            {
                if (!process.HasExited) process.Kill();
                throw new InvalidOperationException($"silo {name} did not become ready:\n{silo.Output}");
            }
        }
        return silo;
    }

    public const int SIGINT = 2, SIGTERM = 15;

    [DllImport("libc", SetLastError = true, EntryPoint = "kill")]
    private static extern int SysKill(int pid, int signal);

    /// <summary>Sends a signal (SIGTERM as docker stop does, SIGINT as Ctrl+C does) to the silo process.</summary>
    public void Signal(int signal)
    {
        // A shell without job control starts a background command (`./test.sh &` in a script) with SIGINT ignored; where
        // that reaches a silo, .NET keeps the signal ignored, as nohup'd processes expect, and SIGINT is lost: the test
        // would wait out its deadline. (Both SIGINT tests failed that way once in a full run started like that, and
        // passed in every foreground and single-assembly background run since; the cause was not pinned down.)
        if (IsIgnored(_process.Id, signal))
            throw new InvalidOperationException($"signal {signal} is ignored by the silo process {_process.Id}, inherited from the test run (a background job of a shell without job control ignores SIGINT): run the tests in the foreground");
        if (SysKill(_process.Id, signal) != 0)
            throw new InvalidOperationException($"kill({_process.Id}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
    }

    /// <summary>Whether <paramref name="pid"/> ignores <paramref name="signal"/> (the SigIgn mask of /proc/PID/status).</summary>
    private static bool IsIgnored(int pid, int signal)
    {
        string? line = File.ReadLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
        return line is not null && (Convert.ToUInt64(line["SigIgn:".Length..].Trim(), 16) & (1UL << (signal - 1))) != 0;
    }

    /// <summary>kill -9: no goodbye, no membership update; the cluster must notice by itself.</summary>
    public void KillHard()
    {
        if (!_process.HasExited) _process.Kill(entireProcessTree: false);
        _process.WaitForExit();
    }

    public Task WaitForExitAsync(TimeSpan timeout) => _process.WaitForExitAsync().WaitAsync(timeout);

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill();
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
    }
}
