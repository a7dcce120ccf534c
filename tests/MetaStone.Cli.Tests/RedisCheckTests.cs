using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using MetaStone.Cli.Doctor;

namespace MetaStone.Cli.Tests;

// Serialized with the other class that picks "free" loopback ports, so one cannot grab the port the other
// just released and expects to be closed (or open).
[Collection(LoopbackPortCollection.Name)]
public sealed class RedisCheckTests
{
    private const string RedisServerPath = "/usr/bin/redis-server";

    [Fact]
    public async Task ReportsOkWhileRedisRunsAndWarnWithFixAfterItStops()
    {
        var port = FreeLoopbackPort();
        var doctor = new SystemDoctor { Redis = new RedisEndpoint("127.0.0.1", port) };

        using (var redis = await RunningRedis.StartAsync(port))
        {
            var running = await doctor.CheckRedisAsync();
            Assert.True(running.Status == DoctorStatus.Ok, running.Detail);
            Assert.Contains("+PONG", running.Detail);
        }

        var stopped = await doctor.CheckRedisAsync();
        Assert.Equal(DoctorStatus.Warn, stopped.Status);
        Assert.Contains($"127.0.0.1:{port}", stopped.Detail);
        Assert.NotNull(stopped.Fix);
        Assert.Contains($"redis-server --port {port}", stopped.Fix);
    }

    [Fact]
    public async Task WarnsWithinTheTimeoutWhenNothingAnswers()
    {
        // A listener that accepts but never replies: the probe must give up after its timeout, not hang.
        using var silent = new TcpListener(IPAddress.Loopback, 0);
        silent.Start();
        var port = ((IPEndPoint)silent.LocalEndpoint).Port;
        var doctor = new SystemDoctor { Redis = new RedisEndpoint("127.0.0.1", port), RedisTimeout = TimeSpan.FromMilliseconds(300) };

        var stopwatch = Stopwatch.StartNew();
        var check = await doctor.CheckRedisAsync();
        Assert.Equal(DoctorStatus.Warn, check.Status);
        Assert.Contains("did not answer", check.Detail);
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(5), stopwatch.Elapsed.ToString());
    }

    [Theory]
    [InlineData("127.0.0.1:6379", "127.0.0.1", 6379)]
    [InlineData("redis.internal:7000", "redis.internal", 7000)]
    [InlineData("[::1]:6380", "::1", 6380)]
    public void ParsesHostAndPort(string text, string host, int port)
    {
        Assert.True(RedisEndpoint.TryParse(text, out var endpoint));
        Assert.Equal(new RedisEndpoint(host, port), endpoint);
    }

    [Theory]
    [InlineData("")]
    [InlineData("localhost")]
    [InlineData("localhost:")]
    [InlineData("localhost:0")]
    [InlineData("localhost:70000")]
    [InlineData(":6379")]
    public void RejectsMalformedEndpoints(string text) => Assert.False(RedisEndpoint.TryParse(text, out _));

    internal static int FreeLoopbackPort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>A throwaway redis-server on loopback without persistence; disposed = killed and reaped.</summary>
    private sealed class RunningRedis : IDisposable
    {
        private readonly Process _process;

        private RunningRedis(Process process) => _process = process;

        public static async Task<RunningRedis> StartAsync(int port)
        {
            Assert.True(File.Exists(RedisServerPath), $"{RedisServerPath} is missing: run deploy/setup-host.sh");
            var startInfo = new ProcessStartInfo(RedisServerPath)
            {
                ArgumentList = { "--port", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no" },
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            var process = Process.Start(startInfo) ?? throw new InvalidOperationException("redis-server did not start");
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            var redis = new RunningRedis(process);
            var probe = new SystemDoctor { Redis = new RedisEndpoint("127.0.0.1", port) };
            for (var attempt = 0; attempt < 100; attempt++)
            {
                if ((await probe.CheckRedisAsync()).Status == DoctorStatus.Ok)
                    return redis;
                if (process.HasExited)
                    break;
                await Task.Delay(100);
            }
            redis.Dispose();
            throw new InvalidOperationException($"redis-server on port {port} did not answer PING within 10 s");
        }

        public void Dispose()
        {
            if (!_process.HasExited)
            {
                _process.Kill();
                _process.WaitForExit();
            }
            _process.Dispose();
        }
    }
}
