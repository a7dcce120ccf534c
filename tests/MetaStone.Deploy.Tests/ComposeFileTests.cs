using MetaStone.Cli.Deploy;

namespace MetaStone.Deploy.Tests;

/// <summary>Every compose file in compose/ and the generator's output keep the deployment invariants (ComposeRules).</summary>
public sealed class ComposeFileTests
{
    /// <summary>
    /// A second machine joining an existing cluster: everything a .env would override. The invariants must
    /// hold there too (e.g. all silos advertising one host IP must still have distinct endpoints).
    /// </summary>
    internal static readonly IReadOnlyDictionary<string, string> SecondMachine = new Dictionary<string, string>
    {
        ["METASTONE_CLUSTER_ID"] = "prod",
        ["METASTONE_SERVICE_ID"] = "metastone-prod",
        ["METASTONE_REDIS"] = "192.0.2.1:6379",
        ["METASTONE_NODE"] = "node2",
        ["METASTONE_ADVERTISED_IP"] = "192.0.2.20",
        ["METASTONE_BIND_IP"] = "0.0.0.0",
        ["METASTONE_MODEL_DIR"] = "/srv/models/metastone-s1",
        ["METASTONE_TAG"] = "1.0",
    };

    internal static IReadOnlyList<string> ComposeFileNames() =>
        Directory.EnumerateFiles(Repo.ComposeDir, "*.yml").Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal).ToList();

    public static TheoryData<string> ComposeFiles() => new(ComposeFileNames());

    [Fact]
    public void ComposeDirectoryHasTheGpuAndCpuFiles()
    {
        var files = ComposeFileNames();
        Assert.Contains("docker-compose.yml", files);
        Assert.Contains("docker-compose.cpu.yml", files);
    }

    [Theory]
    [MemberData(nameof(ComposeFiles))]
    public void CheckedInFileKeepsTheInvariants(string name)
    {
        var path = Path.Combine(Repo.ComposeDir, name);
        AssertNoProblems(ComposeRules.Check(ComposeFile.Load(path)));
        AssertNoProblems(ComposeRules.Check(ComposeFile.Load(path, SecondMachine)));
    }

    [Theory]
    [InlineData(1, false)]
    [InlineData(4, false)]
    [InlineData(8, false)]
    [InlineData(1, true)]
    [InlineData(2, true)]
    public void GeneratedFileKeepsTheInvariants(int silos, bool cpu)
    {
        var spec = new ComposeSpec { Silos = silos, Cpu = cpu };
        var yaml = ComposeGenerator.Generate(spec);
        // Parsed as if it were saved in compose/, where the checked-in files live (relative build contexts).
        var label = ComposeGenerator.CommandLine(spec);
        var file = ComposeFile.Parse(yaml, Repo.ComposeDir, label);
        AssertNoProblems(ComposeRules.Check(file));
        AssertNoProblems(ComposeRules.Check(ComposeFile.Parse(yaml, Repo.ComposeDir, label, SecondMachine)));

        var siloServices = file.Services.Where(ComposeRules.IsSilo).ToList();
        Assert.Equal(silos, siloServices.Count);
        if (!cpu)
        {
            // One silo per GPU, ids exactly 0..N-1.
            var ids = siloServices.Select(service => ComposeService.Strings(service.DeviceReservations.Single().GetValueOrDefault("device_ids")).Single());
            Assert.Equal(Enumerable.Range(0, silos).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)), ids);
        }
    }

    [Fact]
    public void SecondMachineSettingsReachEverySiloAndClient()
    {
        var file = ComposeFile.Load(Path.Combine(Repo.ComposeDir, "docker-compose.yml"), SecondMachine);
        foreach (var service in file.Services.Where(service => ComposeRules.IsSilo(service) || ComposeRules.IsClient(service)))
        {
            Assert.Equal("prod", service.Environment["Orleans__ClusterId"]);
            Assert.Equal("192.0.2.1:6379", service.Environment["MetaStone__Redis"]);
        }
        foreach (var silo in file.Services.Where(ComposeRules.IsSilo))
        {
            Assert.Equal("192.0.2.20", silo.Environment["Orleans__Endpoints__AdvertisedIPAddress"]);
            Assert.StartsWith("node2-gpu", silo.Environment["Orleans__Name"], StringComparison.Ordinal);
            Assert.All(silo.Ports, port => Assert.Equal("0.0.0.0", port.HostIp));
        }
    }

    [Fact]
    public void RulesCatchBrokenFiles()
    {
        // The checks must be able to fail: break a generated file in the ways the rules guard against.
        var good = ComposeGenerator.Generate(new ComposeSpec { Silos = 2 });
        var broken = good
            .Replace("device_ids: [\"1\"]", "device_ids: [\"0\"]", StringComparison.Ordinal)
            .Replace("\"--appendonly\", \"yes\"", "\"--appendonly\", \"no\"", StringComparison.Ordinal)
            .Replace(":30001:30001", ":30000:30000", StringComparison.Ordinal)
            .Replace("Orleans__ClusterId: ${METASTONE_CLUSTER_ID:-metastone}\n      Orleans__ServiceId: ${METASTONE_SERVICE_ID:-metastone}\n      MetaStone__Redis",
                "Orleans__ClusterId: other\n      Orleans__ServiceId: ${METASTONE_SERVICE_ID:-metastone}\n      MetaStone__Redis", StringComparison.Ordinal)
            .Replace("dockerfile: deploy/Dockerfile.client", "dockerfile: deploy/Dockerfile.nope", StringComparison.Ordinal);
        var problems = ComposeRules.Check(ComposeFile.Parse(broken, Repo.ComposeDir, "broken"));
        Assert.Contains(problems, p => p.Contains("GPU 0 is also reserved", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.Contains("--appendonly yes", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.Contains("collides", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.Contains("disagree on Orleans__ClusterId", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.Contains("Dockerfile.nope does not exist", StringComparison.Ordinal));
    }

    [Fact]
    public void EveryVariableIsDocumentedInComposeReadme()
    {
        var readme = File.ReadAllText(Path.Combine(Repo.ComposeDir, "README.md"));
        foreach (var path in Directory.EnumerateFiles(Repo.ComposeDir, "*.yml"))
            foreach (var name in Interpolation.Names(File.ReadAllText(path)))
                Assert.True(readme.Contains(name, StringComparison.Ordinal), $"{name} (used in {Path.GetFileName(path)}) is not explained in compose/README.md");
    }

    private static void AssertNoProblems(IReadOnlyList<string> problems) =>
        Assert.True(problems.Count == 0, "compose problems:\n" + string.Join("\n", problems));
}
