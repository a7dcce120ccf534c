using MetaStone.Cli.Deploy;

namespace MetaStone.Deploy.Tests;

/// <summary>Which compose implementation is on this machine, found once: `docker compose` (plugin) or `docker-compose` (v2 binary).</summary>
internal static class ComposeTool
{
    private static readonly Lazy<string[]?> Found = new(Probe);

    /// <summary>The command prefix (e.g. ["docker", "compose"]), or null when none works.</summary>
    public static string[]? Command => Found.Value;

    public const string MissingReason =
        "no Docker Compose here: neither `docker compose version` nor `docker-compose version` works. "
        + "Install Compose v2 (Debian 13: apt-get install docker-compose; Debian 12 with trixie added as deploy/setup-host.sh does: "
        + "apt-get install -t trixie docker-compose) to run `docker compose config -q`; "
        + "the static compose checks ran regardless.";

    private static string[]? Probe()
    {
        foreach (var candidate in new[] { new[] { "docker", "compose" }, ["docker-compose"] })
        {
            try
            {
                var result = ProcessRunner.Run(candidate[0], [.. candidate.Skip(1), "version"], Repo.Root, TimeSpan.FromSeconds(30));
                // Compose v1 (python) reads the files differently (no `name:`, profiles in late versions only): require v2.
                if (result.ExitCode == 0 && System.Text.RegularExpressions.Regex.IsMatch(result.Output, @"version v?2\.\d+")) return candidate;
            }
            catch (System.ComponentModel.Win32Exception)
            {
                // Not on PATH.
            }
        }
        return null;
    }
}

/// <summary>A theory that is skipped, with the reason, when no Compose v2 implementation is installed.</summary>
public sealed class ComposeTheoryAttribute : TheoryAttribute
{
    public ComposeTheoryAttribute()
    {
        if (ComposeTool.Command is null) Skip = ComposeTool.MissingReason;
    }
}

/// <summary>`docker compose config -q` (Compose's own schema and interpolation check; needs no Docker engine).</summary>
public sealed class ComposeConfigTests
{
    public static TheoryData<string> Files()
    {
        var data = new TheoryData<string>();
        foreach (var file in Directory.EnumerateFiles(Repo.ComposeDir, "*.yml").Order(StringComparer.Ordinal))
            data.Add("compose/" + Path.GetFileName(file));
        // Generated files beyond the checked-in ones.
        data.Add("generated:1");
        data.Add("generated:8");
        return data;
    }

    [ComposeTheory]
    [MemberData(nameof(Files))]
    public void ComposeConfigAcceptsTheFile(string which)
    {
        string path;
        DirectoryInfo? temp = null;
        if (which.StartsWith("generated:", StringComparison.Ordinal))
        {
            // Compose does not open the build context or bind sources during `config`, so a temp folder is fine.
            temp = Directory.CreateTempSubdirectory("metastone-compose-config-");
            path = Path.Combine(temp.FullName, "docker-compose.yml");
            File.WriteAllText(path, ComposeGenerator.Generate(new ComposeSpec { Silos = int.Parse(which["generated:".Length..], System.Globalization.CultureInfo.InvariantCulture) }));
        }
        else
        {
            path = Repo.Full(which);
        }
        try
        {
            // Without any METASTONE_* (defaults), and as a second machine would run it; with the client profile
            // so that service is validated as well.
            var cleared = Environment.GetEnvironmentVariables().Keys.Cast<string>()
                .Where(key => key.StartsWith("METASTONE_", StringComparison.Ordinal))
                .ToDictionary(key => key, _ => (string?)null);
            var secondMachine = new Dictionary<string, string?>(cleared);
            foreach (var (key, value) in ComposeFileTests.SecondMachine) secondMachine[key] = value;
            foreach (var environment in new[] { cleared, secondMachine })
            {
                var tool = ComposeTool.Command!;
                var result = ProcessRunner.Run(tool[0], [.. tool.Skip(1), "-f", path, "--profile", "client", "config", "-q"],
                    Path.GetDirectoryName(path)!, TimeSpan.FromMinutes(1), environment);
                Assert.True(result.ExitCode == 0, $"{string.Join(' ', tool)} config -q rejected {which}:\n{result.Tail()}");
            }
        }
        finally
        {
            temp?.Delete(recursive: true);
        }
    }
}
