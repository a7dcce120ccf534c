using System.Globalization;
using YamlDotNet.RepresentationModel;

namespace MetaStone.Deploy.Tests;

/// <summary>A published port: host address, host port, container port.</summary>
internal sealed record PublishedPort(string HostIp, int Published, int Target)
{
    public override string ToString() => $"{HostIp}:{Published}->{Target}";
}

/// <summary>A mount of a service: source (volume name or host path), target, read-only flag, kind.</summary>
internal sealed record Mount(string Type, string Source, string Target, bool ReadOnly);

/// <summary>
/// A compose file as plain dictionaries/lists/strings (YamlDotNet representation model), with every scalar
/// interpolated against a given variable set, plus typed views of the parts the deploy checks need.
/// Both short and long compose syntaxes are accepted, so the checks hold for hand edits too.
/// </summary>
internal sealed class ComposeFile
{
    private ComposeFile(string label, string directory, string text, Dictionary<string, object?> root, IReadOnlyList<ComposeService> services)
    {
        Label = label;
        Directory = directory;
        Text = text;
        Root = root;
        Services = services;
    }

    /// <summary>File name or generator arguments, for messages.</summary>
    public string Label { get; }

    /// <summary>Directory the file lives in (relative paths in it resolve against this, as in compose).</summary>
    public string Directory { get; }

    /// <summary>The raw YAML text.</summary>
    public string Text { get; }

    /// <summary>Interpolated top-level mapping.</summary>
    public Dictionary<string, object?> Root { get; }

    public IReadOnlyList<ComposeService> Services { get; }

    public ComposeService? Service(string name) => Services.FirstOrDefault(service => service.Name == name);

    public static ComposeFile Load(string path, IReadOnlyDictionary<string, string>? variables = null) =>
        Parse(File.ReadAllText(path), Path.GetDirectoryName(Path.GetFullPath(path))!, Path.GetFileName(path), variables);

    public static ComposeFile Parse(string yaml, string directory, string label, IReadOnlyDictionary<string, string>? variables = null)
    {
        variables ??= Interpolation.NoVariables;
        var stream = new YamlStream();
        using (var reader = new StringReader(yaml)) stream.Load(reader);
        if (stream.Documents.Count != 1) throw new FormatException($"{label}: expected one YAML document, found {stream.Documents.Count}");
        var root = Convert(stream.Documents[0].RootNode, text => Interpolation.Resolve(text, variables)) as Dictionary<string, object?>
            ?? throw new FormatException($"{label}: the top level is not a mapping");
        var services = new List<ComposeService>();
        if (root.GetValueOrDefault("services") is Dictionary<string, object?> map)
            foreach (var (name, value) in map)
                services.Add(new ComposeService(name, value as Dictionary<string, object?> ?? new()));
        return new ComposeFile(label, directory, yaml, root, services);
    }

    private static object? Convert(YamlNode node, Func<string, string> scalar) => node switch
    {
        YamlMappingNode mapping => mapping.Children.ToDictionary(
            pair => ((YamlScalarNode)pair.Key).Value ?? "", pair => Convert(pair.Value, scalar), StringComparer.Ordinal),
        YamlSequenceNode sequence => sequence.Children.Select(child => Convert(child, scalar)).ToList(),
        YamlScalarNode { Value: null } => null,
        // Plain "null"/"~" scalars are YAML nulls; everything else stays a string (compose coerces later).
        YamlScalarNode { Style: YamlDotNet.Core.ScalarStyle.Plain, Value: "null" or "~" or "" } => null,
        YamlScalarNode value => scalar(value.Value!),
        _ => throw new FormatException($"unsupported YAML node {node.NodeType} at {node.Start}"),
    };
}

/// <summary>Typed views over one interpolated service mapping.</summary>
internal sealed class ComposeService(string name, Dictionary<string, object?> map)
{
    public string Name { get; } = name;
    public Dictionary<string, object?> Map { get; } = map;

    public string? Image => Map.GetValueOrDefault("image") as string;

    public Dictionary<string, object?>? Build => Map.GetValueOrDefault("build") switch
    {
        Dictionary<string, object?> build => build,
        string context => new Dictionary<string, object?> { ["context"] = context },
        _ => null,
    };

    public IReadOnlyList<string> Profiles => Strings(Map.GetValueOrDefault("profiles"));

    /// <summary>Environment in either map or "KEY=VALUE" list form.</summary>
    public IReadOnlyDictionary<string, string> Environment
    {
        get
        {
            var result = new Dictionary<string, string>(StringComparer.Ordinal);
            switch (Map.GetValueOrDefault("environment"))
            {
                case Dictionary<string, object?> env:
                    foreach (var (key, value) in env) result[key] = value as string ?? "";
                    break;
                case List<object?> list:
                    foreach (var item in list.OfType<string>())
                    {
                        var eq = item.IndexOf('=', StringComparison.Ordinal);
                        if (eq > 0) result[item[..eq]] = item[(eq + 1)..];
                    }
                    break;
            }
            return result;
        }
    }

    /// <summary>depends_on in list form (condition service_started) or map form.</summary>
    public IReadOnlyDictionary<string, string> DependsOn
    {
        get
        {
            var result = new Dictionary<string, string>(StringComparer.Ordinal);
            switch (Map.GetValueOrDefault("depends_on"))
            {
                case List<object?> list:
                    foreach (var item in list.OfType<string>()) result[item] = "service_started";
                    break;
                case Dictionary<string, object?> deps:
                    foreach (var (key, value) in deps)
                        result[key] = (value as Dictionary<string, object?>)?.GetValueOrDefault("condition") as string ?? "service_started";
                    break;
            }
            return result;
        }
    }

    /// <summary>Ports in short ("[ip:]host:container[/proto]") or long syntax; container-only entries have Published 0.</summary>
    public IReadOnlyList<PublishedPort> Ports
    {
        get
        {
            var result = new List<PublishedPort>();
            if (Map.GetValueOrDefault("ports") is not List<object?> ports) return result;
            foreach (var entry in ports)
            {
                if (entry is Dictionary<string, object?> longForm)
                {
                    result.Add(new PublishedPort(longForm.GetValueOrDefault("host_ip") as string ?? "0.0.0.0",
                        ParsePort(longForm.GetValueOrDefault("published") as string), ParsePort(longForm.GetValueOrDefault("target") as string)));
                    continue;
                }
                var text = (entry as string ?? "").Split('/')[0];
                // An IPv6 host address would be bracketed; these files use IPv4 only.
                var parts = text.Split(':');
                result.Add(parts.Length switch
                {
                    1 => new PublishedPort("0.0.0.0", 0, ParsePort(parts[0])),
                    2 => new PublishedPort("0.0.0.0", ParsePort(parts[0]), ParsePort(parts[1])),
                    3 => new PublishedPort(parts[0].Length == 0 ? "0.0.0.0" : parts[0], ParsePort(parts[1]), ParsePort(parts[2])),
                    _ => throw new FormatException($"service {Name}: cannot read port '{entry}'"),
                });
            }
            return result;
        }
    }

    /// <summary>Volumes in short ("src:dst[:ro]") or long syntax.</summary>
    public IReadOnlyList<Mount> Volumes
    {
        get
        {
            var result = new List<Mount>();
            if (Map.GetValueOrDefault("volumes") is not List<object?> volumes) return result;
            foreach (var entry in volumes)
            {
                if (entry is Dictionary<string, object?> longForm)
                {
                    result.Add(new Mount(longForm.GetValueOrDefault("type") as string ?? "volume",
                        longForm.GetValueOrDefault("source") as string ?? "", longForm.GetValueOrDefault("target") as string ?? "",
                        longForm.GetValueOrDefault("read_only") as string is "true" or "True"));
                    continue;
                }
                var parts = (entry as string ?? "").Split(':');
                if (parts.Length < 2) { result.Add(new Mount("volume", "", parts[0], false)); continue; }
                var source = parts[0];
                var type = source.StartsWith('.') || source.StartsWith('/') || source.StartsWith('~') ? "bind" : "volume";
                result.Add(new Mount(type, source, parts[1], parts.Length > 2 && parts[2].Split(',').Contains("ro")));
            }
            return result;
        }
    }

    /// <summary>The GPU reservations (deploy.resources.reservations.devices).</summary>
    public IReadOnlyList<Dictionary<string, object?>> DeviceReservations =>
        Path(Map, "deploy", "resources", "reservations", "devices") is List<object?> devices
            ? devices.OfType<Dictionary<string, object?>>().ToList()
            : [];

    /// <summary>Networks the service joins, with the static IPv4 address if any.</summary>
    public IReadOnlyDictionary<string, string?> Networks => Map.GetValueOrDefault("networks") switch
    {
        List<object?> list => list.OfType<string>().ToDictionary(name => name, _ => (string?)null),
        Dictionary<string, object?> map => map.ToDictionary(pair => pair.Key, pair => (pair.Value as Dictionary<string, object?>)?.GetValueOrDefault("ipv4_address") as string),
        _ => new Dictionary<string, string?>(),
    };

    public IReadOnlyList<string> HealthcheckTest => Path(Map, "healthcheck", "test") switch
    {
        string shell => ["CMD-SHELL", shell],
        var list => Strings(list),
    };

    public IReadOnlyList<string> Command => Map.GetValueOrDefault("command") switch
    {
        // The shell-form string is split on blanks: enough to find flags such as --appendonly.
        string text => text.Split(' ', StringSplitOptions.RemoveEmptyEntries),
        var list => Strings(list),
    };

    public static object? Path(object? node, params string[] keys)
    {
        foreach (var key in keys)
            node = (node as Dictionary<string, object?>)?.GetValueOrDefault(key);
        return node;
    }

    public static IReadOnlyList<string> Strings(object? node) =>
        node is List<object?> list ? list.Select(item => item as string ?? "").ToList() : [];

    private static int ParsePort(string? text) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var port) ? port
            : throw new FormatException($"not a single port number: '{text}' (ranges are not used in these files)");
}
