using System.Diagnostics;

namespace MetaStone.Bench;

/// <summary>
/// Silo processes (the MetaStone.Silo executable shipped next to the CLI) and optionally a private redis-server,
/// started for a benchmark on this machine and killed when it ends.
/// </summary>
public sealed class SiloProcessGroup : IAsyncDisposable
{
    private readonly List<Process> _processes = [];

    public static string SiloDll
    {
        get
        {
            string dll = Path.Combine(AppContext.BaseDirectory, "MetaStone.Silo.dll");
            if (!File.Exists(dll)) throw new InvalidOperationException($"the silo executable is missing next to the CLI: {dll}");
            return dll;
        }
    }

    /// <summary>Starts redis-server on a free loopback port without persistence and returns its connection string.</summary>
    public async Task<string> StartRedisAsync()
    {
        const string binary = "/usr/bin/redis-server";
        if (!File.Exists(binary)) throw new InvalidOperationException($"{binary} not found: install redis-server (deploy/setup-host.sh) or pass --redis host:port");
        int port = LoopbackPort.Free();
        var info = new ProcessStartInfo(binary) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "--port", port.ToString(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no" }) info.ArgumentList.Add(a);
        var process = Process.Start(info) ?? throw new InvalidOperationException("redis-server did not start");
        _processes.Add(process);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        for (int i = 0; i < 100; i++)
        {
            try
            {
                using var probe = new System.Net.Sockets.TcpClient();
                await probe.ConnectAsync(System.Net.IPAddress.Loopback, port);
                return $"127.0.0.1:{port}";
            }
            catch (System.Net.Sockets.SocketException) { await Task.Delay(50); }
        }
        throw new InvalidOperationException($"redis-server did not listen on port {port}");
    }

    /// <summary>Starts silos with the given MetaStone__* settings and waits until each has printed its ready line.</summary>
    public async Task StartSilosAsync(int count, Func<int, IReadOnlyDictionary<string, string>> settings, TimeSpan timeout)
    {
        var ready = new List<Task>();
        for (int i = 0; i < count; i++)
        {
            var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
            info.ArgumentList.Add(SiloDll);
            foreach (var (key, value) in settings(i)) info.Environment[key] = value;
            info.Environment["MetaStone__SiloPort"] = LoopbackPort.Free().ToString();
            info.Environment["MetaStone__GatewayPort"] = LoopbackPort.Free().ToString();
            info.Environment["DOTNET_gcServer"] = "0";
            var process = Process.Start(info) ?? throw new InvalidOperationException("a silo process did not start");
            _processes.Add(process);
            var up = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var log = new System.Collections.Concurrent.ConcurrentQueue<string>();
            process.OutputDataReceived += (_, e) =>
            {
                if (e.Data is null) return;
                log.Enqueue(e.Data);
                if (e.Data.Contains(" ready: ", StringComparison.Ordinal)) up.TrySetResult();
            };
            process.ErrorDataReceived += (_, e) => { if (e.Data is not null) log.Enqueue(e.Data); };
            process.Exited += (_, _) => up.TrySetException(new InvalidOperationException($"silo {i} exited before it was ready:\n{string.Join('\n', log)}"));
            process.EnableRaisingEvents = true;
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            ready.Add(up.Task);
        }
        await Task.WhenAll(ready).WaitAsync(timeout);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var process in Enumerable.Reverse(_processes))
        {
            try { if (!process.HasExited) process.Kill(); await process.WaitForExitAsync(); }
            catch (InvalidOperationException) { }
            process.Dispose();
        }
        _processes.Clear();
    }
}
