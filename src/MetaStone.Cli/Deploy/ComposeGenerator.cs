using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace MetaStone.Cli.Deploy;

/// <summary>What <see cref="ComposeGenerator"/> writes: N silos (one per GPU, or CPU-only) plus Redis, the OpenAI-compatible gateway and a client.</summary>
public sealed record ComposeSpec
{
    /// <summary>Default network of the GPU file; the CPU file uses the next /24 so both can exist on one host.</summary>
    public const string DefaultGpuSubnet = "10.203.0.0/24";
    public const string DefaultCpuSubnet = "10.203.1.0/24";

    /// <summary>Upper bound so every silo's static address stays below the dynamic range (.128/25) of the /24.</summary>
    public const int MaxSilos = 64;

    /// <summary>Number of silo services; with <see cref="Cpu"/> false, one per GPU (GPU ids 0..N-1).</summary>
    public int Silos { get; init; } = 4;

    /// <summary>CPU-only variant: no GPU reservation, the CPU image, device <c>cpu</c>.</summary>
    public bool Cpu { get; init; }

    /// <summary>IPv4 /24 of the compose network; null = the default for the variant.</summary>
    public string? Subnet { get; init; }

    public string EffectiveSubnet => Subnet ?? (Cpu ? DefaultCpuSubnet : DefaultGpuSubnet);
}

/// <summary>
/// Writes the docker-compose file of a MetaStone cluster (compose/docker-compose.yml is exactly the output for
/// <c>--gpus 4</c>, compose/docker-compose.cpu.yml for <c>--cpu --silos 2</c>; tests hold both to that).
/// The YAML is emitted as text, not through a serializer, so the file is stable, commented and diff-friendly,
/// and the CLI needs no YAML dependency.
/// </summary>
/// <remarks>
/// Layout choices (explained for operators in compose/README.md):
/// <list type="bullet">
/// <item>Each silo has a static IPv4 on one user-defined network and advertises it. A restarted silo comes back
/// on the same IP:port, so Orleans retires its previous incarnation at once instead of probing a stale row,
/// and there is exactly one network, so Orleans never has to guess between addresses. Dynamic allocation
/// (Redis, client) is confined to the upper half (<c>ip_range</c> .128/25) so it can never take a silo's address.</item>
/// <item>Silo i uses silo port 11111+i and gateway port 30000+i, published 1:1 on the host. On one machine they
/// only need to be distinct; across machines every silo advertises the host IP
/// (<c>METASTONE_ADVERTISED_IP</c>) and peers dial exactly those published ports.</item>
/// <item>Everything an operator changes per machine is a <c>${METASTONE_*:-default}</c> variable, so a second
/// machine uses the same file with a different <c>.env</c>.</item>
/// </list>
/// </remarks>
public static class ComposeGenerator
{
    public const int FirstSiloPort = 11111;
    public const int FirstGatewayPort = 30000;
    public const int RedisPort = 6379;
    /// <summary>Silo i serves Orleans' dashboard on 8080 + i and Prometheus metrics on 9464 + i (OpenTelemetry's usual exporter port).</summary>
    public const int FirstDashboardPort = 8080;
    public const int FirstMetricsPort = 9464;
    /// <summary>The gateway's port inside its container (published as METASTONE_GATEWAY_PORT, default the same).</summary>
    public const int GatewayHttpPort = 8000;
    public const string GatewayServiceName = "gateway";

    /// <summary>Host address of the first silo in the /24 (.11); .1 is the bridge gateway.</summary>
    public const int FirstSiloHostOctet = 11;

    /// <summary>The <c>metastone compose</c> arguments that reproduce <paramref name="spec"/> (written into the header).</summary>
    public static string CommandLine(ComposeSpec spec)
    {
        var args = new StringBuilder("metastone compose");
        args.Append(spec.Cpu ? $" --cpu --silos {spec.Silos}" : $" --gpus {spec.Silos}");
        if (spec.Subnet is not null && spec.Subnet != (spec.Cpu ? ComposeSpec.DefaultCpuSubnet : ComposeSpec.DefaultGpuSubnet))
            args.Append(" --subnet ").Append(spec.Subnet);
        return args.ToString();
    }

    /// <summary>Checks the spec; returns an error message or null.</summary>
    public static string? Validate(ComposeSpec spec)
    {
        if (spec.Silos < 1 || spec.Silos > ComposeSpec.MaxSilos)
            return $"the number of silos must be between 1 and {ComposeSpec.MaxSilos}, got {spec.Silos}";
        if (!TryParseSubnet24(spec.EffectiveSubnet, out _))
            return $"--subnet expects an IPv4 /24 such as {ComposeSpec.DefaultGpuSubnet}, got '{spec.EffectiveSubnet}'";
        return null;
    }

    /// <summary>Parses "a.b.c.0/24" into its first three octets ("a.b.c").</summary>
    public static bool TryParseSubnet24(string cidr, out string prefix)
    {
        prefix = "";
        var parts = cidr.Split('/');
        if (parts.Length != 2 || parts[1] != "24") return false;
        if (!IPAddress.TryParse(parts[0], out var address) || address.AddressFamily != AddressFamily.InterNetwork) return false;
        var bytes = address.GetAddressBytes();
        // IPAddress.TryParse accepts shorthand like "10.203"; insist on the dotted quad written out.
        if (bytes[3] != 0 || parts[0].Split('.').Length != 4) return false;
        prefix = string.Create(CultureInfo.InvariantCulture, $"{bytes[0]}.{bytes[1]}.{bytes[2]}");
        return true;
    }

    /// <summary>Compose service name of silo <paramref name="index"/>.</summary>
    public static string SiloServiceName(ComposeSpec spec, int index) =>
        string.Create(CultureInfo.InvariantCulture, $"silo-{(spec.Cpu ? "cpu" : "gpu")}{index}");

    /// <summary>The whole compose file (LF line endings, trailing newline).</summary>
    public static string Generate(ComposeSpec spec)
    {
        if (Validate(spec) is { } error) throw new ArgumentException(error, nameof(spec));
        TryParseSubnet24(spec.EffectiveSubnet, out var prefix);
        var variant = spec.Cpu ? "cpu" : "gpu";
        var project = spec.Cpu ? "metastone-cpu" : "metastone";
        var w = new YamlText();

        w.Line($"# MetaStone cluster, {(spec.Cpu ? $"CPU-only: {spec.Silos} silo(s)" : $"{spec.Silos} GPU(s): one silo per GPU")}, Redis, the OpenAI-compatible gateway, and a client under the 'client' profile.");
        w.Line($"# Silo i: Orleans dashboard on http://127.0.0.1:{FirstDashboardPort}+i/, Prometheus metrics on http://127.0.0.1:{FirstMetricsPort}+i/metrics;");
        w.Line($"# gateway: http://127.0.0.1:{GatewayHttpPort}/v1 (OpenAI API), /health, /metrics, /openapi/v1.json.");
        w.Line($"# Generated by `{CommandLine(spec)}`: do not edit by hand, regenerate (see compose/README.md).");
        w.Line("# Per-machine settings come from METASTONE_* variables (shell or a .env file next to this file):");
        w.Line("#   METASTONE_CLUSTER_ID, METASTONE_SERVICE_ID  one cluster = same ids + same Redis on every machine");
        w.Line("#   METASTONE_REDIS        host:port of the shared Redis (default: this file's redis service)");
        w.Line("#   METASTONE_NODE         machine name used in silo names (<node>-" + variant + "<i>), unique per machine");
        w.Line("#   METASTONE_ADVERTISED_IP  set to this machine's IP when silos on other machines must reach these");
        w.Line("#   METASTONE_BIND_IP      host interface for published ports (127.0.0.1 = this machine only)");
        w.Line("#   METASTONE_REDIS_PORT   host port of the published Redis (if 6379 is taken by a local redis-server)");
        w.Line("#   METASTONE_MODEL_DIR    model directory on the host, mounted read-only at /models/metastone");
        w.Line("#   METASTONE_GATEWAY_PORT host port of the gateway (default 8000); METASTONE_API_KEY: when set, clients must send it as a bearer token");
        w.Line("#   METASTONE_MODEL_ID     the model name clients send to the gateway (default metastone)");
        w.Line("#   METASTONE_MAX_BATCH, METASTONE_TAG");
        w.Line($"name: {project}");
        w.Line();
        w.Line("services:");
        WriteRedis(w);
        for (var i = 0; i < spec.Silos; i++)
            WriteSilo(w, spec, i, prefix);
        WriteGateway(w, spec);
        WriteClient(w, spec);
        w.Line();
        w.Line("networks:");
        w.Line("metastone:", 1);
        // A fixed network name lets `docker run --network ...` attach ad-hoc clients without knowing the project.
        w.Line($"name: {project}", 2);
        w.Line("driver: bridge", 2);
        w.Line("ipam:", 2);
        w.Line("config:", 3);
        w.Line($"- subnet: {prefix}.0/24", 4);
        // Dynamic addresses (Redis, client) only from the upper half: silos hold static ones in the lower half.
        w.Line($"  ip_range: {prefix}.128/25", 4);
        w.Line($"  gateway: {prefix}.1", 4);
        w.Line();
        w.Line("volumes:");
        w.Line("redis-data: {}", 1);
        return w.ToString();
    }

    private static void WriteRedis(YamlText w)
    {
        w.Line("redis:", 1);
        w.Line("image: redis:7", 2);
        // Append-only file on a named volume: job records and membership survive a restart of the stack.
        w.Line("command: [\"redis-server\", \"--appendonly\", \"yes\"]", 2);
        w.Line("restart: unless-stopped", 2);
        w.Line("volumes:", 2);
        w.Line("- redis-data:/data", 3);
        w.Line("ports:", 2);
        // Published for host-side clients and silos on other machines; 127.0.0.1 unless METASTONE_BIND_IP opens it
        // (Redis has no auth here). The host port is a variable: deploy/setup-host.sh may run a redis-server on 6379.
        w.Line($"- \"${{METASTONE_BIND_IP:-127.0.0.1}}:${{METASTONE_REDIS_PORT:-{RedisPort}}}:{RedisPort}\"", 3);
        w.Line("networks:", 2);
        w.Line("metastone: {}", 3);
        w.Line("healthcheck:", 2);
        w.Line("test: [\"CMD\", \"redis-cli\", \"ping\"]", 3);
        w.Line("interval: 5s", 3);
        w.Line("timeout: 3s", 3);
        w.Line("retries: 20", 3);
        w.Line("start_period: 5s", 3);
    }

    private static void WriteSilo(YamlText w, ComposeSpec spec, int index, string prefix)
    {
        var inv = CultureInfo.InvariantCulture;
        var variant = spec.Cpu ? "cpu" : "gpu";
        var siloPort = (FirstSiloPort + index).ToString(inv);
        var gatewayPort = (FirstGatewayPort + index).ToString(inv);
        var dashboardPort = (FirstDashboardPort + index).ToString(inv);
        var metricsPort = (FirstMetricsPort + index).ToString(inv);
        var address = string.Create(inv, $"{prefix}.{FirstSiloHostOctet + index}");
        w.Line();
        w.Line($"{SiloServiceName(spec, index)}:", 1);
        w.Line($"image: metastone-silo-{variant}:${{METASTONE_TAG:-latest}}", 2);
        w.Line("build:", 2);
        w.Line("context: ..", 3);
        w.Line($"dockerfile: deploy/Dockerfile.silo-{variant}", 3);
        w.Line("restart: unless-stopped", 2);
        // Orleans leaves the cluster gracefully on SIGTERM (hands off grains, updates membership): give it time.
        w.Line("stop_grace_period: 60s", 2);
        w.Line("depends_on:", 2);
        w.Line("redis:", 3);
        w.Line("condition: service_healthy", 4);
        w.Line("environment:", 2);
        w.Line("Orleans__ClusterId: ${METASTONE_CLUSTER_ID:-metastone}", 3);
        w.Line("Orleans__ServiceId: ${METASTONE_SERVICE_ID:-metastone}", 3);
        w.Line($"Orleans__Name: ${{METASTONE_NODE:-node1}}-{variant}{index}", 3);
        w.Line($"Orleans__Endpoints__AdvertisedIPAddress: ${{METASTONE_ADVERTISED_IP:-{address}}}", 3);
        w.Line($"Orleans__Endpoints__SiloPort: \"{siloPort}\"", 3);
        w.Line($"Orleans__Endpoints__GatewayPort: \"{gatewayPort}\"", 3);
        w.Line("MetaStone__Redis: ${METASTONE_REDIS:-redis:6379}", 3);
        w.Line("MetaStone__Model: /models/metastone", 3);
        // device_ids: ["N"] shows up as the only GPU, index 0, inside the container: always cuda:0.
        w.Line($"MetaStone__Devices: {(spec.Cpu ? "cpu" : "cuda:0")}", 3);
        w.Line($"MetaStone__MaxBatch: ${{METASTONE_MAX_BATCH:-{(spec.Cpu ? 32 : 64)}}}", 3);
        // Orleans' dashboard and the silo's Prometheus endpoint, on every interface of the container (published below).
        w.Line($"MetaStone__DashboardPort: \"{dashboardPort}\"", 3);
        w.Line($"MetaStone__MetricsPort: \"{metricsPort}\"", 3);
        w.Line("MetaStone__HttpAddress: 0.0.0.0", 3);
        w.Line("volumes:", 2);
        // Long syntax: a missing model directory is an error at start-up instead of an empty root-owned folder.
        w.Line("- type: bind", 3);
        w.Line("  source: ${METASTONE_MODEL_DIR:-../models/metastone-tiny}", 3);
        w.Line("  target: /models/metastone", 3);
        w.Line("  read_only: true", 3);
        w.Line("ports:", 2);
        // Same port inside and outside: in multi-machine mode peers dial <host ip>:<advertised port>.
        w.Line($"- \"${{METASTONE_BIND_IP:-127.0.0.1}}:{siloPort}:{siloPort}\"", 3);
        w.Line($"- \"${{METASTONE_BIND_IP:-127.0.0.1}}:{gatewayPort}:{gatewayPort}\"", 3);
        w.Line($"- \"${{METASTONE_BIND_IP:-127.0.0.1}}:{dashboardPort}:{dashboardPort}\"", 3);
        w.Line($"- \"${{METASTONE_BIND_IP:-127.0.0.1}}:{metricsPort}:{metricsPort}\"", 3);
        w.Line("networks:", 2);
        w.Line("metastone:", 3);
        w.Line($"ipv4_address: {address}", 4);
        if (spec.Cpu) return;
        w.Line("deploy:", 2);
        w.Line("resources:", 3);
        w.Line("reservations:", 4);
        w.Line("devices:", 5);
        w.Line("- driver: nvidia", 6);
        w.Line($"  device_ids: [\"{index.ToString(inv)}\"]", 6);
        w.Line("  capabilities: [gpu]", 6);
    }

    /// <summary>
    /// The OpenAI-compatible gateway (<c>metastone serve</c> from the client image) in front of the cluster, started by <c>up</c>.
    /// Healthy = <c>GET /health</c> answers 200 (bash's /dev/tcp: the image has no curl).
    /// </summary>
    private static void WriteGateway(YamlText w, ComposeSpec spec)
    {
        var port = GatewayHttpPort.ToString(CultureInfo.InvariantCulture);
        w.Line();
        w.Line($"{GatewayServiceName}:", 1);
        WriteClientImage(w);
        w.Line("restart: unless-stopped", 2);
        WriteDependsOnCluster(w, spec);
        WriteClusterEnvironment(w);
        // Empty = no key required (serve ignores an empty METASTONE_API_KEY).
        w.Line("METASTONE_API_KEY: ${METASTONE_API_KEY:-}", 3);
        w.Line($"command: [\"serve\", \"--urls\", \"http://0.0.0.0:{port}\", \"--model-id\", \"${{METASTONE_MODEL_ID:-metastone}}\"]", 2);
        w.Line("ports:", 2);
        w.Line($"- \"${{METASTONE_BIND_IP:-127.0.0.1}}:${{METASTONE_GATEWAY_PORT:-{port}}}:{port}\"", 3);
        w.Line("networks:", 2);
        w.Line("metastone: {}", 3);
        w.Line("healthcheck:", 2);
        w.Line($"test: [\"CMD\", \"bash\", \"-c\", 'exec 3<>/dev/tcp/127.0.0.1/{port} && printf \"GET /health HTTP/1.0\\r\\n\\r\\n\" >&3 && grep -q \" 200 \" <&3']", 3);
        w.Line("interval: 10s", 3);
        w.Line("timeout: 5s", 3);
        w.Line("retries: 3", 3);
        w.Line("start_period: 30s", 3);
    }

    /// <summary>The client image (the CLI), which both the gateway and the client service run.</summary>
    private static void WriteClientImage(YamlText w)
    {
        w.Line("image: metastone-client:${METASTONE_TAG:-latest}", 2);
        w.Line("build:", 2);
        w.Line("context: ..", 3);
        w.Line("dockerfile: deploy/Dockerfile.client", 3);
    }

    /// <summary>Opens the environment block with what an Orleans client of the cluster needs.</summary>
    private static void WriteClusterEnvironment(YamlText w)
    {
        w.Line("environment:", 2);
        w.Line("Orleans__ClusterId: ${METASTONE_CLUSTER_ID:-metastone}", 3);
        w.Line("Orleans__ServiceId: ${METASTONE_SERVICE_ID:-metastone}", 3);
        w.Line("MetaStone__Redis: ${METASTONE_REDIS:-redis:6379}", 3);
    }

    private static void WriteDependsOnCluster(YamlText w, ComposeSpec spec)
    {
        w.Line("depends_on:", 2);
        w.Line("redis:", 3);
        w.Line("condition: service_healthy", 4);
        for (var i = 0; i < spec.Silos; i++)
        {
            w.Line($"{SiloServiceName(spec, i)}:", 3);
            w.Line("condition: service_healthy", 4);
        }
    }

    private static void WriteClient(YamlText w, ComposeSpec spec)
    {
        w.Line();
        w.Line("client:", 1);
        WriteClientImage(w);
        // Not started by `up`: `docker compose --profile client run --rm client submit ...` (or sweep ...).
        w.Line("profiles: [client]", 2);
        WriteDependsOnCluster(w, spec);
        WriteClusterEnvironment(w);
        w.Line("networks:", 2);
        w.Line("metastone: {}", 3);
        w.Line("command: [\"--help\"]", 2);
    }

    /// <summary>Line writer with two-space YAML indentation and LF endings on every platform.</summary>
    private sealed class YamlText
    {
        private readonly StringBuilder _text = new();

        public void Line(string text = "", int depth = 0)
        {
            if (text.Length > 0) _text.Append(' ', depth * 2).Append(text);
            _text.Append('\n');
        }

        public override string ToString() => _text.ToString();
    }
}
