using System.Diagnostics;
using StackExchange.Redis;

namespace MetaStone.Cluster.Tests.Infrastructure;

/// <summary>
/// A real redis-server of its own on a free loopback port, stopped on dispose: without persistence by default, or with
/// an append-only file (fsync on every write) in a temporary directory, so it can be killed with -9 and restarted on the
/// same port with its data.
/// </summary>
public sealed class RedisServer : IAsyncDisposable
{
    private const string Binary = "/usr/bin/redis-server";
    private Process _process;
    private readonly string? _dataDirectory;
    public int Port { get; }
    public string ConnectionString => $"127.0.0.1:{Port}";
    /// <summary>The test's own connection (reconnects by itself after a restart).</summary>
    public ConnectionMultiplexer Connection { get; }

    private RedisServer(Process process, int port, ConnectionMultiplexer connection, string? dataDirectory)
    {
        _process = process;
        Port = port;
        Connection = connection;
        _dataDirectory = dataDirectory;
    }

    public static async Task<RedisServer> StartAsync(bool appendOnly = false)
    {
        if (!File.Exists(Binary)) throw new InvalidOperationException($"{Binary} is missing: deploy/setup-host.sh installs redis-server");
        int port = FreePorts.Next();
        string? dir = appendOnly ? Directory.CreateTempSubdirectory("metastone-redis-").FullName : null;
        var process = Launch(port, dir);
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (true)
        {
            try
            {
                var connection = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{port},connectTimeout=500");
                return new RedisServer(process, port, connection, dir);
            }
            catch (RedisConnectionException) when (DateTime.UtcNow < deadline && !process.HasExited)
            {
                await Task.Delay(100);
            }
        }
    }

    private static Process Launch(int port, string? dataDirectory)
    {
        var info = new ProcessStartInfo(Binary) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        var args = new List<string> { "--port", port.ToString(), "--bind", "127.0.0.1", "--save", "", "--protected-mode", "yes" };
        args.AddRange(dataDirectory is null ? ["--appendonly", "no"] : ["--appendonly", "yes", "--appendfsync", "always", "--dir", dataDirectory]);
        foreach (var a in args) info.ArgumentList.Add(a);
        var process = Process.Start(info) ?? throw new InvalidOperationException("redis-server did not start");
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    /// <summary>kill -9 of the server process: clients see their connections break mid-command.</summary>
    public void KillHard()
    {
        if (!_process.HasExited) _process.Kill();
        _process.WaitForExit();
    }

    /// <summary>Starts the server again on the same port (and append-only file) and waits until it answers PING with its data loaded.</summary>
    public async Task RestartAsync()
    {
        KillHard();
        _process.Dispose();
        _process = Launch(Port, _dataDirectory);
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (true)
        {
            try
            {
                await using var probe = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{Port},connectTimeout=500");
                await probe.GetDatabase().PingAsync();
                return;
            }
            catch (Exception e) when (e is RedisException && DateTime.UtcNow < deadline && !_process.HasExited)
            {
                await Task.Delay(100);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Connection.DisposeAsync();
        if (!_process.HasExited) _process.Kill();
        await _process.WaitForExitAsync();
        _process.Dispose();
        if (_dataDirectory is not null) try { Directory.Delete(_dataDirectory, recursive: true); } catch (IOException) { }
    }
}
