using Microsoft.Extensions.Configuration;

namespace MetaStone.Silo;

/// <summary>
/// Everything a MetaStone silo needs, bound from the <c>MetaStone</c> configuration section
/// (environment <c>MetaStone__Model=…</c>, command line <c>--MetaStone:Model=…</c>); the usual Orleans keys
/// (<c>Orleans__Name</c>, <c>Orleans__ClusterId</c>, <c>Orleans__ServiceId</c>, <c>Orleans__Endpoints__…</c>) are honoured as fallbacks.
/// </summary>
public sealed class SiloSettings
{
    /// <summary>Silo name; replica grains are keyed and placed by it, so it must be unique in the cluster.</summary>
    public string Name { get; set; } = $"silo-{Environment.MachineName}-{Environment.ProcessId}";
    /// <summary>Model directory (Hugging Face layout). Required for the <c>model</c> engine.</summary>
    public string? Model { get; set; }
    /// <summary>Comma-separated devices, one replica each: cpu, cuda:0, cuda:1…</summary>
    public string Devices { get; set; } = "cpu";
    /// <summary>model (the real engine), instant or simulated (benchmark engines that burn no CPU).</summary>
    public string Engine { get; set; } = "model";
    /// <summary>Redis connection string (host:port,…). Null: localhost development clustering and in-memory jobs.</summary>
    public string? Redis { get; set; }
    public string ClusterId { get; set; } = "metastone";
    public string ServiceId { get; set; } = "metastone";
    public int SiloPort { get; set; } = 11111;
    public int GatewayPort { get; set; } = 30000;
    /// <summary>The address other silos and clients dial; loopback unless the cluster spans machines.</summary>
    public string AdvertisedAddress { get; set; } = "127.0.0.1";
    /// <summary>Localhost clustering with several silos: the silo port of the first one.</summary>
    public int? PrimarySiloPort { get; set; }
    public int MaxBatch { get; set; } = 32;
    public int MaxSequenceLength { get; set; } = 2048;
    /// <summary>Model engine: each decode step lasts at least this long (0 = no floor). For tests and demos that need the
    /// tiny model's jobs to run for seconds, as a big model's would (cancel, drain, fail-over).</summary>
    public double MinDecodeStepMilliseconds { get; set; }
    /// <summary>Intra-op threads of the torch engine (0 = torch's default).</summary>
    public int ComputeThreads { get; set; }
    /// <summary>Declare a silo dead after about two seconds of silence (tests and benchmarks on one machine).</summary>
    public bool FastFailureDetection { get; set; }
    public TimeSpan JobRetention { get; set; } = TimeSpan.FromDays(7);
    /// <summary>Without Redis: a directory where sweeps keep their finished items, so re-running one resumes it; null = memory only.</summary>
    public string? SweepDirectory { get; set; }
    /// <summary>least-loaded (default) or two-choices; the same on every silo of a cluster.</summary>
    public string Placement { get; set; } = "least-loaded";
    /// <summary>Simulated engine: fixed latency of one batched decode step.</summary>
    public double SimulatedStepMilliseconds { get; set; } = 20;
    /// <summary>Simulated engine: extra latency per sequence in the batch.</summary>
    public double SimulatedPerSequenceMilliseconds { get; set; } = 0.5;
    /// <summary>Simulated engine: tokens generated per candidate.</summary>
    public int SimulatedTokens { get; set; } = 64;
    /// <summary>On SIGTERM / SIGINT / <c>docker stop</c>: seconds the silo lets its in-flight candidates finish before it
    /// leaves the cluster (anything still running is then regenerated elsewhere with the same seed).</summary>
    public double ShutdownGraceSeconds { get; set; } = 30;
    /// <summary>Admission control: jobs that may run in the cluster at once (the same on every silo); a submission
    /// beyond it is refused with "cluster busy … submit it again later". 0 = unbounded.</summary>
    public int MaxRunningJobs { get; set; } = MetaStone.Grains.AdmissionOptions.DefaultMaxRunningJobs;

    /// <summary>Port of Orleans' dashboard on this silo (HTTP, <c>/</c>); 0 = no dashboard.</summary>
    public int DashboardPort { get; set; }
    /// <summary>Port of this silo's Prometheus endpoint (<c>/metrics</c>: the engines' and grains' series); 0 = none.
    /// May equal <see cref="DashboardPort"/>: one HTTP listener then serves both.</summary>
    public int MetricsPort { get; set; }
    /// <summary>Address the dashboard and metrics listen on: loopback by default; 0.0.0.0 in a container whose ports are published.</summary>
    public string HttpAddress { get; set; } = "127.0.0.1";

    /// <summary>How long a job or sweep keeps waiting through a Redis outage (restart, fail-over) before it fails.</summary>
    public double RedisOutageToleranceSeconds { get; set; } = 60;

    public TimeSpan ShutdownGrace => TimeSpan.FromSeconds(ShutdownGraceSeconds);

    /// <summary>", dashboard http://…:P/, metrics http://…:P/metrics" for the ready line (empty without HTTP).</summary>
    public string HttpDescription =>
        (DashboardPort > 0 ? $", dashboard http://{HttpAddress}:{DashboardPort}/" : "") + (MetricsPort > 0 ? $", metrics http://{HttpAddress}:{MetricsPort}/metrics" : "");

    /// <summary>The distinct HTTP ports this silo listens on (dashboard, metrics); empty = no HTTP at all.</summary>
    public IReadOnlyList<int> HttpPorts => new[] { DashboardPort, MetricsPort }.Where(p => p > 0).Distinct().ToArray();

    /// <summary>Orleans keys honoured as fallbacks (environment <c>Orleans__Name</c>, …).</summary>
    public static readonly string[] OrleansKeys =
    [
        "Orleans:Name", "Orleans:ClusterId", "Orleans:ServiceId",
        "Orleans:Endpoints:SiloPort", "Orleans:Endpoints:GatewayPort", "Orleans:Endpoints:AdvertisedIPAddress",
    ];

    /// <summary>The settings of the <c>MetaStone</c> section: every public settable property.</summary>
    public static IReadOnlyList<string> MetaStoneKeys { get; } = typeof(SiloSettings).GetProperties()
        .Where(p => p.CanWrite && p.SetMethod!.IsPublic).Select(p => "MetaStone:" + p.Name).ToArray();

    /// <summary>Every configuration key a silo binds (environment form: replace ':' with "__").</summary>
    public static IReadOnlyList<string> BoundKeys { get; } = [.. OrleansKeys, .. MetaStoneKeys];

    /// <summary>Binds the settings; an unknown <c>MetaStone</c> key (a typo such as <c>MetaStone__Device</c> for
    /// <c>MetaStone__Devices</c>) is an <see cref="ArgumentException"/> instead of being silently ignored.</summary>
    public static SiloSettings FromConfiguration(IConfiguration configuration)
    {
        var unknown = configuration.GetSection("MetaStone").GetChildren()
            .Where(c => !MetaStoneKeys.Contains("MetaStone:" + c.Key, StringComparer.OrdinalIgnoreCase)).Select(c => c.Key).ToList();
        if (unknown.Count > 0)
            throw new ArgumentException($"unknown setting{(unknown.Count > 1 ? "s" : "")} {string.Join(", ", unknown.Select(k => "MetaStone__" + k))} " +
                $"(valid: {string.Join(", ", MetaStoneKeys.Select(k => k.Replace(":", "__", StringComparison.Ordinal)))})");
        var settings = new SiloSettings();
        if (configuration["Orleans:Name"] is { Length: > 0 } name) settings.Name = name;
        if (configuration["Orleans:ClusterId"] is { Length: > 0 } cluster) settings.ClusterId = cluster;
        if (configuration["Orleans:ServiceId"] is { Length: > 0 } service) settings.ServiceId = service;
        if (int.TryParse(configuration["Orleans:Endpoints:SiloPort"], out int siloPort)) settings.SiloPort = siloPort;
        if (int.TryParse(configuration["Orleans:Endpoints:GatewayPort"], out int gatewayPort)) settings.GatewayPort = gatewayPort;
        if (configuration["Orleans:Endpoints:AdvertisedIPAddress"] is { Length: > 0 } address) settings.AdvertisedAddress = address;
        configuration.GetSection("MetaStone").Bind(settings);
        return settings;
    }

    public IReadOnlyList<string> DeviceList => Devices.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting.</summary>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(Name) || Name.Contains('/')) throw new ArgumentException($"silo name '{Name}' must be non-empty and contain no '/'");
        if (DeviceList.Count == 0) throw new ArgumentException("no device given (e.g. --device cpu)");
        if (DeviceList.Distinct().Count() != DeviceList.Count) throw new ArgumentException($"device list '{Devices}' names a device twice");
        if (Engine is not ("model" or "instant" or "simulated")) throw new ArgumentException($"unknown engine '{Engine}' (valid: model, instant, simulated)");
        if (Engine == "model" && string.IsNullOrWhiteSpace(Model)) throw new ArgumentException("no model directory given (MetaStone:Model / --model)");
        if (Engine == "model" && !Directory.Exists(Model)) throw new ArgumentException($"model directory not found: {Model}");
        if (!System.Net.IPAddress.TryParse(AdvertisedAddress, out _)) throw new ArgumentException($"advertised address '{AdvertisedAddress}' is not an IP address");
        if (SiloPort is < 1 or > 65535 || GatewayPort is < 1 or > 65535) throw new ArgumentException($"ports must be 1–65535 (silo {SiloPort}, gateway {GatewayPort})");
        if (DashboardPort is < 0 or > 65535 || MetricsPort is < 0 or > 65535) throw new ArgumentException($"HTTP ports must be 0 (off) or 1–65535 (dashboard {DashboardPort}, metrics {MetricsPort})");
        if (new[] { DashboardPort, MetricsPort }.Where(p => p > 0).Any(p => p == SiloPort || p == GatewayPort))
            throw new ArgumentException($"the dashboard / metrics port must differ from the silo port {SiloPort} and the gateway port {GatewayPort}");
        if (!System.Net.IPAddress.TryParse(HttpAddress, out _)) throw new ArgumentException($"HTTP address '{HttpAddress}' is not an IP address (127.0.0.1, or 0.0.0.0 for every interface)");
        MetaStone.Grains.ReplicaPlacementOptions.ParsePolicy(Placement);
        if (!(MinDecodeStepMilliseconds >= 0 && MinDecodeStepMilliseconds <= 60_000)) throw new ArgumentException($"min decode step must be 0–60000 ms (got {MinDecodeStepMilliseconds})");
        if (MaxBatch < 1) throw new ArgumentException($"max batch must be ≥ 1 (got {MaxBatch})");
        if (MaxRunningJobs < 0) throw new ArgumentException($"max running jobs must be ≥ 0, 0 = unbounded (got {MaxRunningJobs})");
        if (!(ShutdownGraceSeconds >= 0 && ShutdownGraceSeconds <= 3600)) throw new ArgumentException($"shutdown grace must be 0–3600 seconds (got {ShutdownGraceSeconds})");
        if (!(RedisOutageToleranceSeconds >= 0 && RedisOutageToleranceSeconds <= 3600)) throw new ArgumentException($"Redis outage tolerance must be 0–3600 seconds (got {RedisOutageToleranceSeconds})");
    }
}
