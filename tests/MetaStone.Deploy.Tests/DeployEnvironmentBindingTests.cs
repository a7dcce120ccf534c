using System.Text.RegularExpressions;
using MetaStone.Cli.Cluster;
using MetaStone.Cli.Deploy;
using MetaStone.Silo;
using Microsoft.Extensions.Configuration;

namespace MetaStone.Deploy.Tests;

/// <summary>
/// Issue 11 item 6: the Dockerfiles and compose files set <c>MetaStone__Device</c>, the silo binds <c>Devices</c>, so GPU
/// containers silently ran on CPU. Every environment variable a deploy file sets (Dockerfiles, checked-in compose files,
/// files the compose generator writes) must be one the code binds: silo images and services against
/// <see cref="SiloSettings.BoundKeys"/>, the client against <see cref="ClusterCliOptions.EnvironmentVariables"/>;
/// platform variables only from a short list. And a silo's environment, bound as the silo binds it, must give the
/// device the file names.
/// </summary>
public sealed class DeployEnvironmentBindingTests
{
    /// <summary>Variables for the runtime and the container platform, not for MetaStone's code.</summary>
    private static readonly string[] PlatformVariables =
        ["DOTNET_ROOT", "DOTNET_NOLOGO", "DOTNET_CLI_TELEMETRY_OPTOUT", "DOTNET_RUNNING_IN_CONTAINER", "NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_VISIBLE_DEVICES"];

    private static readonly string[] SiloKeys = SiloSettings.BoundKeys.Select(k => k.Replace(":", "__", StringComparison.Ordinal)).ToArray();

    private enum Role { Silo, Client, Gateway }

    private sealed record Source(string Label, Role Role, IReadOnlyDictionary<string, string> Environment);

    private static IEnumerable<Source> Sources()
    {
        foreach (var (name, role) in new[] { ("Dockerfile.silo-cpu", Role.Silo), ("Dockerfile.silo-gpu", Role.Silo), ("Dockerfile.client", Role.Client) })
        {
            var env = Dockerfile.Load(Path.Combine(Repo.DeployDir, name)).Final.All("ENV")
                .SelectMany(e => Regex.Matches(e.Arguments, @"(?<key>[A-Za-z_][A-Za-z0-9_]*)=(?<value>\S*)").Select(m => (m.Groups["key"].Value, m.Groups["value"].Value)))
                .ToDictionary(p => p.Item1, p => p.Item2);
            yield return new Source($"deploy/{name}", role, env);
        }
        var files = Directory.GetFiles(Repo.ComposeDir, "*.yml").Select(path => ComposeFile.Load(path))
            .Concat([
                ComposeFile.Parse(ComposeGenerator.Generate(new ComposeSpec { Silos = 2 }), Repo.ComposeDir, "generated gpu"),
                ComposeFile.Parse(ComposeGenerator.Generate(new ComposeSpec { Silos = 3, Cpu = true }), Repo.ComposeDir, "generated cpu"),
            ]);
        foreach (var file in files)
            foreach (var service in file.Services.Where(s => ComposeRules.IsSilo(s) || ComposeRules.IsClient(s)))
                yield return new Source($"{file.Label}:{service.Name}",
                    ComposeRules.IsSilo(service) ? Role.Silo : ComposeRules.IsGateway(service) ? Role.Gateway : Role.Client, service.Environment);
    }

    [Fact]
    public void EveryVariableADeployFileSetsIsBoundByTheCode()
    {
        var sources = Sources().ToList();
        Assert.True(sources.Count(s => s.Role == Role.Silo) >= 6, "the deploy files were found");
        var unbound = new List<string>();
        foreach (var source in sources)
        {
            var bound = source.Role switch
            {
                Role.Silo => SiloKeys,
                Role.Gateway => [.. ClusterCliOptions.EnvironmentVariables, MetaStone.Cli.Commands.ServeCommand.ApiKeyEnvironmentVariable],
                _ => ClusterCliOptions.EnvironmentVariables,
            };
            foreach (var key in source.Environment.Keys)
            {
                if (PlatformVariables.Contains(key, StringComparer.Ordinal)) continue;
                if (!bound.Contains(key, StringComparer.OrdinalIgnoreCase))
                    unbound.Add($"{source.Label} sets {key}, which the {source.Role.ToString().ToLowerInvariant()} does not bind");
            }
        }
        Assert.True(unbound.Count == 0, string.Join("\n", unbound));
    }

    [Fact]
    public void ASilosEnvironmentBindsToTheDeviceItNames()
    {
        foreach (var source in Sources().Where(s => s.Role == Role.Silo))
        {
            // Exactly as the silo executable binds its environment (MetaStone__X → MetaStone:X).
            var configuration = new ConfigurationBuilder()
                .AddInMemoryCollection(source.Environment.Select(kv => KeyValuePair.Create(kv.Key.Replace("__", ":", StringComparison.Ordinal), (string?)kv.Value)))
                .Build();
            var settings = SiloSettings.FromConfiguration(configuration);
            string named = source.Environment.Single(kv => kv.Key.StartsWith("MetaStone__Device", StringComparison.Ordinal)).Value;
            Assert.Equal(named, settings.Devices);
            Assert.Equal(source.Label.Contains("gpu", StringComparison.OrdinalIgnoreCase) ? "cuda:0" : "cpu", settings.Devices);
            if (source.Environment.TryGetValue("Orleans__Endpoints__GatewayPort", out var gateway))
                Assert.Equal(int.Parse(gateway), settings.GatewayPort);
        }
    }

    [Fact]
    public void AnUnknownMetaStoneSettingIsAnErrorNotSilentlyIgnored()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection([KeyValuePair.Create("MetaStone:Device", (string?)"cuda:0")]).Build();
        var error = Assert.Throws<ArgumentException>(() => SiloSettings.FromConfiguration(configuration));
        Assert.Contains("unknown setting MetaStone__Device", error.Message);
        Assert.Contains("MetaStone__Devices", error.Message);
    }
}
