using System.CommandLine;
using MetaStone.Cli;
using MetaStone.Cli.Deploy;

namespace MetaStone.Deploy.Tests;

/// <summary>The `metastone compose` generator and the checked-in files it owns.</summary>
public sealed class ComposeGeneratorTests
{
    [Theory]
    [InlineData("docker-compose.yml", 4, false)]
    [InlineData("docker-compose.cpu.yml", 2, true)]
    public void CheckedInFileIsExactlyTheGeneratorOutput(string name, int silos, bool cpu)
    {
        var expected = ComposeGenerator.Generate(new ComposeSpec { Silos = silos, Cpu = cpu });
        var actual = File.ReadAllText(Path.Combine(Repo.ComposeDir, name)).ReplaceLineEndings("\n");
        var regenerate = $"{ComposeGenerator.CommandLine(new ComposeSpec { Silos = silos, Cpu = cpu })} --out compose/{name}";
        Assert.True(expected == actual, $"compose/{name} differs from the generator output: run `./metastone.sh {regenerate["metastone ".Length..]}`");
    }

    [Fact]
    public void VerbWritesTheFileAndIsDiscovered()
    {
        var dir = Directory.CreateTempSubdirectory("metastone-compose-");
        try
        {
            var path = Path.Combine(dir.FullName, "eight.yml");
            var output = new StringWriter();
            var exit = CliRootCommand.Create().Parse(["compose", "--gpus", "8", "--out", path])
                .Invoke(new InvocationConfiguration { Output = output });
            Assert.Equal(0, exit);
            Assert.Equal(ComposeGenerator.Generate(new ComposeSpec { Silos = 8 }), File.ReadAllText(path));
            Assert.Contains("8 GPU silo(s)", output.ToString(), StringComparison.Ordinal);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void VerbPrintsToStandardOutputWithoutOut()
    {
        var output = new StringWriter();
        var exit = CliRootCommand.Create().Parse(["compose", "--cpu", "--silos", "3"])
            .Invoke(new InvocationConfiguration { Output = output });
        Assert.Equal(0, exit);
        Assert.Equal(ComposeGenerator.Generate(new ComposeSpec { Silos = 3, Cpu = true }), output.ToString());
    }

    [Theory]
    [InlineData("--gpus", "0")]
    [InlineData("--gpus", "65")]
    [InlineData("--subnet", "10.203.0.0/16")]
    [InlineData("--subnet", "10.203.0.5/24")]
    [InlineData("--subnet", "nonsense")]
    public void VerbRejectsBadInput(string option, string value)
    {
        var error = new StringWriter();
        var exit = CliRootCommand.Create().Parse(["compose", option, value])
            .Invoke(new InvocationConfiguration { Output = new StringWriter(), Error = error });
        Assert.Equal(2, exit);
        Assert.StartsWith("error:", error.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void CustomSubnetMovesEveryAddressAndIsInTheHeader()
    {
        var spec = new ComposeSpec { Silos = 2, Subnet = "192.168.77.0/24" };
        var yaml = ComposeGenerator.Generate(spec);
        Assert.Contains("metastone compose --gpus 2 --subnet 192.168.77.0/24", yaml, StringComparison.Ordinal);
        Assert.DoesNotContain("10.203.", yaml, StringComparison.Ordinal);
        var file = ComposeFile.Parse(yaml, Repo.ComposeDir, "subnet");
        Assert.Empty(ComposeRules.Check(file));
        Assert.Equal("192.168.77.12", file.Service("silo-gpu1")!.Networks["metastone"]);
    }

    [Fact]
    public void OutputIsDeterministicWithLfEndings()
    {
        var spec = new ComposeSpec { Silos = 8 };
        var first = ComposeGenerator.Generate(spec);
        Assert.Equal(first, ComposeGenerator.Generate(spec));
        Assert.DoesNotContain("\r", first, StringComparison.Ordinal);
        Assert.EndsWith("\n", first, StringComparison.Ordinal);
    }

    /// <summary>Issue 14: the gateway is a service (started by up, port published, healthy = GET /health), every silo serves the dashboard and metrics.</summary>
    [Fact]
    public void GeneratedFileRunsTheGatewayAndADashboardOnEverySilo()
    {
        var spec = new ComposeSpec { Silos = 3, Cpu = true };
        var file = ComposeFile.Parse(ComposeGenerator.Generate(spec), Repo.ComposeDir, "generated cpu 3");
        Assert.Empty(ComposeRules.Check(file));
        var gateway = file.Service(ComposeGenerator.GatewayServiceName)!;
        Assert.True(ComposeRules.IsGateway(gateway));
        Assert.Empty(gateway.Profiles);
        Assert.Contains(gateway.Ports, p => p.Target == 8000 && p.Published == 8000 && p.HostIp == "127.0.0.1");
        Assert.Contains("GET /health", string.Join(' ', gateway.HealthcheckTest), StringComparison.Ordinal);
        for (var i = 0; i < spec.Silos; i++)
        {
            var silo = file.Service(ComposeGenerator.SiloServiceName(spec, i))!;
            Assert.Equal((8080 + i).ToString(System.Globalization.CultureInfo.InvariantCulture), silo.Environment["MetaStone__DashboardPort"]);
            Assert.Equal((9464 + i).ToString(System.Globalization.CultureInfo.InvariantCulture), silo.Environment["MetaStone__MetricsPort"]);
            Assert.Contains(silo.Ports, p => p.Target == 8080 + i && p.Published == 8080 + i);
        }
    }

    /// <summary>The rules catch a file whose gateway lost its health check or whose silo has no dashboard (so the check above can fail).</summary>
    [Fact]
    public void RulesReportAMissingGatewayHealthCheckAndDashboard()
    {
        var yaml = ComposeGenerator.Generate(new ComposeSpec { Silos = 1, Cpu = true });
        var broken = yaml.Replace("GET /health", "GET /", StringComparison.Ordinal)
            .Replace("      MetaStone__DashboardPort: \"8080\"\n", "", StringComparison.Ordinal);
        Assert.NotEqual(yaml, broken);
        var problems = ComposeRules.Check(ComposeFile.Parse(broken, Repo.ComposeDir, "broken"));
        Assert.Contains(problems, p => p.Contains("GET /health", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.Contains("MetaStone__DashboardPort", StringComparison.Ordinal));
        var noGateway = ComposeRules.Check(ComposeFile.Parse(yaml.Replace("command: [\"serve\"", "command: [\"status\"", StringComparison.Ordinal), Repo.ComposeDir, "no gateway"));
        Assert.Contains(noGateway, p => p.Contains("exactly one gateway", StringComparison.Ordinal));
    }
}
