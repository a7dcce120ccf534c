using System.Collections.Concurrent;
using System.Diagnostics;

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

    public static string SiloDll()
    {
        string configuration = AppContext.BaseDirectory.Contains("/Release/", StringComparison.Ordinal) ? "Release" : "Debug";
        string dll = Path.Combine(TestModel.RepoRoot(), "src", "MetaStone.Silo", "bin", configuration, "net10.0", "linux-x64", "MetaStone.Silo.dll");
        if (!File.Exists(dll)) throw new FileNotFoundException($"the silo executable is not built: {dll}");
        return dll;
    }

    /// <summary>Starts a silo; with <paramref name="waitReady"/> returns once it printed its ready line (models loaded, joined).</summary>
    public static async Task<SiloProcess> StartAsync(string name, string redis, string clusterId, IReadOnlyDictionary<string, string>? extra = null, bool waitReady = true)
    {
        int siloPort = FreePorts.Next(), gatewayPort = FreePorts.Next();
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
            ["DOTNET_gcServer"] = "0",
        };
        foreach (var (k, v) in extra ?? new Dictionary<string, string>()) env[k] = v;
        foreach (var (k, v) in env) info.Environment[k] = v;
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
