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
}
