using System.CommandLine;
using System.Text.Json;

namespace MetaStone.Cli.Tests;

// Serialized with the other class that picks "free" loopback ports, so one cannot grab the port the other
// just released and expects to be closed (or open).
[Collection(LoopbackPortCollection.Name)]
public sealed class DoctorCommandTests
{
    [Fact]
    public void RootCommandDiscoversTheDoctorVerb()
    {
        var root = CliRootCommand.Create();
        Assert.Contains(root.Subcommands, command => command.Name == "doctor");
    }

    [Fact]
    public async Task JsonOutputParsesAndReportsEveryCheck()
    {
        var closedPort = RedisCheckTests.FreeLoopbackPort();
        using var output = new StringWriter();
        var exitCode = await CliRootCommand.Create()
            .Parse(["doctor", "--json", "--redis", $"127.0.0.1:{closedPort}"])
            .InvokeAsync(new InvocationConfiguration { Output = output });

        using var report = JsonDocument.Parse(output.ToString());
        var checks = report.RootElement.GetProperty("checks").EnumerateArray().ToList();
        var names = checks.Select(check => check.GetProperty("name").GetString()).ToList();
        Assert.Equal(["os", "dotnet", "cpu", "memory", "libstdc++", "torch", "cpu-features", "redis", "node", "fonts"], names);
        Assert.All(checks, check => Assert.Contains(check.GetProperty("status").GetString(), new[] { "ok", "warn", "fail", "info" }));

        // Nothing fails on this host, and an unreachable Redis is only a warning.
        Assert.True(report.RootElement.GetProperty("healthy").GetBoolean(), output.ToString());
        Assert.Equal(0, exitCode);
        var redis = checks.Single(check => check.GetProperty("name").GetString() == "redis");
        Assert.Equal("warn", redis.GetProperty("status").GetString());
        Assert.Contains($"redis-server --port {closedPort}", redis.GetProperty("fix").GetString());
    }

    [Fact]
    public void MissingFontsAreAWarningWithTheInstallCommand()
    {
        string empty = Path.Combine(Path.GetTempPath(), "metastone-nofonts-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(empty);
        try
        {
            var check = new MetaStone.Cli.Doctor.SystemDoctor { FontDirectories = [empty] }.CheckFonts();
            Assert.Equal(MetaStone.Cli.Doctor.DoctorStatus.Warn, check.Status);
            Assert.Equal("sudo apt-get install fonts-dejavu-core", check.Fix);
            File.WriteAllBytes(Path.Combine(empty, "x.ttf"), [0]);
            Assert.Equal(MetaStone.Cli.Doctor.DoctorStatus.Ok, new MetaStone.Cli.Doctor.SystemDoctor { FontDirectories = [empty] }.CheckFonts().Status);
        }
        finally { Directory.Delete(empty, recursive: true); }
    }

    [Fact]
    public async Task MalformedRedisEndpointIsAUsageError()
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        var exitCode = await CliRootCommand.Create()
            .Parse(["doctor", "--redis", "no-port"])
            .InvokeAsync(new InvocationConfiguration { Output = output, Error = error });
        Assert.NotEqual(0, exitCode);
        Assert.Contains("host:port", error.ToString());
    }
}
