using System.Globalization;
using System.Net.Sockets;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using TorchSharp;

namespace MetaStone.Cli.Doctor;

/// <summary>
/// Checks that this machine can build, test and run MetaStone.Cluster, and says exactly how to fix what is missing.
/// Each check is a public method so tests can run them one by one; <see cref="RunAllAsync"/> runs them in report order.
/// </summary>
public sealed class SystemDoctor
{
    /// <summary>The 1.5B policy needs ~3.5 GB in bf16 and ~7 GB in fp32, plus KV cache for k candidates.</summary>
    private const long RecommendedMemoryBytes = 8L << 30;

    private static readonly string[] ReportedCpuFlags = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni"];

    public RedisEndpoint Redis { get; init; } = RedisEndpoint.Default;
    public TimeSpan RedisTimeout { get; init; } = TimeSpan.FromSeconds(1);
    public string OsReleasePath { get; init; } = "/etc/os-release";
    public string CpuInfoPath { get; init; } = "/proc/cpuinfo";
    public string MemInfoPath { get; init; } = "/proc/meminfo";

    public async Task<IReadOnlyList<DoctorCheck>> RunAllAsync(CancellationToken cancellationToken = default)
    {
        var checks = new List<DoctorCheck>
        {
            CheckOperatingSystem(),
            CheckDotnet(),
            CheckCpu(),
            CheckMemory(),
            // libstdc++ before torch: when it is too old the torch check's failure is explained by this one.
            CheckLibStdCxx(),
            CheckTorch(),
            CheckCpuFeatures(),
            await CheckRedisAsync(cancellationToken).ConfigureAwait(false),
            CheckNode(),
            CheckFonts(),
        };
        return checks;
    }

    public static bool HasFailures(IEnumerable<DoctorCheck> checks) => checks.Any(check => check.Status == DoctorStatus.Fail);

    // --- OS, runtime, hardware -------------------------------------------------------------------------------------

    public DoctorCheck CheckOperatingSystem()
    {
        const string name = "os";
        if (!OperatingSystem.IsLinux())
            return new DoctorCheck(name, DoctorStatus.Fail, $"{RuntimeInformation.OSDescription}: MetaStone ships the linux-x64 libtorch only.",
                "Run on Linux x86-64: Debian 12/13 or Ubuntu 24.04.");
        if (RuntimeInformation.ProcessArchitecture != Architecture.X64)
            return new DoctorCheck(name, DoctorStatus.Fail, $"{RuntimeInformation.ProcessArchitecture}: MetaStone ships the linux-x64 libtorch only.",
                "Run on an x86-64 machine.");

        var release = ReadOsRelease();
        var pretty = release.GetValueOrDefault("PRETTY_NAME") ?? "unknown Linux (no /etc/os-release)";
        var kernel = ReadLinesOrEmpty("/proc/sys/kernel/osrelease").FirstOrDefault() ?? "unknown";
        var detail = $"{pretty}, kernel {kernel}";
        return DistroOf(release) switch
        {
            Distro.Debian12 => new DoctorCheck(name, DoctorStatus.Ok, detail + " (supported; needs libstdc++6 from Debian 13, see libstdc++)", null),
            Distro.Debian13OrNewer or Distro.Ubuntu2404OrNewer => new DoctorCheck(name, DoctorStatus.Ok, detail + " (supported)", null),
            Distro.Ubuntu2204 => new DoctorCheck(name, DoctorStatus.Warn, detail + " (works with a newer libstdc++, not tested)",
                "Prefer Ubuntu 24.04; on 22.04 install libstdc++6 from the ubuntu-toolchain-r/test PPA (see libstdc++)."),
            _ => new DoctorCheck(name, DoctorStatus.Warn, detail + " (not tested)",
                "Supported: Debian 12/13, Ubuntu 24.04. Elsewhere you need a libstdc++ from GCC >= 13 (see libstdc++)."),
        };
    }

    public static DoctorCheck CheckDotnet() =>
        new("dotnet", DoctorStatus.Ok, $"{RuntimeInformation.FrameworkDescription} ({RuntimeInformation.RuntimeIdentifier})", null);

    public DoctorCheck CheckCpu()
    {
        var model = ReadCpuInfoField("model name") ?? "unknown CPU model";
        var cores = Environment.ProcessorCount;
        var detail = $"{model}, {cores} logical core{(cores == 1 ? "" : "s")} available";
        return cores >= 2
            ? new DoctorCheck("cpu", DoctorStatus.Ok, detail, null)
            : new DoctorCheck("cpu", DoctorStatus.Warn, detail,
                "Generation runs, but slowly: give the machine (or container) at least 2 cores.");
    }

    public DoctorCheck CheckMemory()
    {
        var total = ReadMemInfoBytes("MemTotal");
        var available = ReadMemInfoBytes("MemAvailable");
        if (total is null)
            return new DoctorCheck("memory", DoctorStatus.Warn, $"could not read {MemInfoPath}", null);
        var detail = $"{FormatGiB(total.Value)} total, {(available is null ? "?" : FormatGiB(available.Value))} available";
        return total.Value >= RecommendedMemoryBytes
            ? new DoctorCheck("memory", DoctorStatus.Ok, detail, null)
            : new DoctorCheck("memory", DoctorStatus.Warn, detail,
                "The 1.5B model needs ~3.5 GB in bf16 (~7 GB in fp32) plus KV cache: use a machine with at least 8 GiB.");
    }

    // --- native runtime -------------------------------------------------------------------------------------------

    public DoctorCheck CheckLibStdCxx()
    {
        const string name = "libstdc++";
        // ldconfig's answer is what any new process gets; the mapped copy is what this one really uses
        // (they differ when LD_LIBRARY_PATH points elsewhere). The mapped one decides the status.
        var cached = LibStdCxxInspector.FindInLdconfigCache();
        var mapped = LibStdCxxInspector.FindMappedLibStdCxx();
        var inUse = mapped ?? cached;
        if (inUse is null)
            return new DoctorCheck(name, DoctorStatus.Fail, "libstdc++.so.6 not found (neither in the ldconfig cache nor mapped)", LibStdCxxAdvice());
        var where = $"ldconfig -p: {cached ?? "no entry"}; in this process: {mapped ?? "not mapped"}";
        try
        {
            var newest = LibStdCxxInspector.NewestVersion(inUse) ?? "no GLIBCXX versions";
            if (!LibStdCxxInspector.ProvidesRequiredVersion(inUse))
                return new DoctorCheck(name, DoctorStatus.Fail, $"{where}; newest {newest}: lacks {LibStdCxxInspector.RequiredVersion}", LibStdCxxAdvice());
            if (cached is not null && cached != inUse && !LibStdCxxInspector.ProvidesRequiredVersion(cached))
                return new DoctorCheck(name, DoctorStatus.Warn, $"{where}; this process's copy provides {LibStdCxxInspector.RequiredVersion} but the system's lacks it",
                    "Processes started without this LD_LIBRARY_PATH will fail to load torch. " + LibStdCxxAdvice());
            return new DoctorCheck(name, DoctorStatus.Ok, $"{where}; newest {newest}: provides {LibStdCxxInspector.RequiredVersion}", null);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return new DoctorCheck(name, DoctorStatus.Fail, $"{where}; cannot read {inUse}: {ex.Message}", LibStdCxxAdvice());
        }
    }

    /// <summary>The distro-specific way to get GCC 13's libstdc++.</summary>
    public string LibStdCxxAdvice()
    {
        const string why = "TorchSharp 0.107's libLibTorchSharp.so needs GLIBCXX_3.4.32 (GCC 13's C++ runtime). ";
        return DistroOf(ReadOsRelease()) switch
        {
            Distro.Debian12 => why + "On Debian 12 run deploy/setup-host.sh: it adds Debian 13 (trixie) main pinned at priority 100 " +
                "and runs `apt-get install -t trixie libstdc++6`.",
            Distro.Ubuntu2204 => why + "On Ubuntu 22.04: `sudo add-apt-repository ppa:ubuntu-toolchain-r/test && sudo apt-get update && " +
                "sudo apt-get install libstdc++6`.",
            Distro.Debian13OrNewer or Distro.Ubuntu2404OrNewer => why + "This distro ships it: `sudo apt-get install --reinstall libstdc++6`, " +
                "and check LD_LIBRARY_PATH does not point at an older copy.",
            _ => why + "Install a libstdc++ from GCC >= 13 (or use Debian 13 / Ubuntu 24.04).",
        };
    }

    public DoctorCheck CheckTorch()
    {
        const string name = "torch";
        var torchSharpVersion = TorchSharpVersion();
        var libTorchPackage = LibTorchPackageFromDepsFile();
        var versions = $"TorchSharp {torchSharpVersion}, {libTorchPackage ?? "libtorch package unknown"}";
        try
        {
            var probe = ProbeTorch();
            return new DoctorCheck(name, DoctorStatus.Ok,
                $"{versions}; torch.ones(1) ok; cuda available: {(probe.CudaAvailable ? "yes" : "no")}, {probe.CudaDevices} CUDA device(s)", null);
        }
        catch (Exception ex)
        {
            return new DoctorCheck(name, DoctorStatus.Fail, $"{versions}; native load failed: {FlattenMessages(ex)}", LibStdCxxAdvice());
        }
    }

    private readonly record struct TorchProbe(bool CudaAvailable, int CudaDevices);

    // Kept out of line so a missing TorchSharp assembly or native library surfaces as an exception
    // inside CheckTorch's try block rather than when CheckTorch itself is compiled.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static TorchProbe ProbeTorch()
    {
        using var one = torch.ones(1);
        if (one.item<float>() != 1f)
            throw new InvalidOperationException("torch.ones(1) did not return 1");
        var cudaAvailable = torch.cuda.is_available();
        return new TorchProbe(cudaAvailable, cudaAvailable ? torch.cuda.device_count() : 0);
    }

    private static string TorchSharpVersion()
    {
        try
        {
            return ReadTorchSharpVersion();
        }
        catch (Exception ex) when (ex is FileNotFoundException or FileLoadException)
        {
            return "missing";
        }
    }

    // Out of line for the same reason as ProbeTorch: typeof(torch) needs TorchSharp.dll when compiled.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static string ReadTorchSharpVersion()
    {
        var assembly = typeof(torch).Assembly;
        var informational = assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion;
        // Strip the "+commit" suffix the SDK appends.
        return informational?.Split('+')[0] ?? assembly.GetName().Version?.ToString() ?? "unknown";
    }

    /// <summary>
    /// libtorch exposes no version through TorchSharp, but the native package we were built against
    /// (libtorch-cpu-linux-x64/2.10.0, libtorch-cuda-12.8-linux-x64/…) is recorded in the app's deps.json.
    /// </summary>
    private static string? LibTorchPackageFromDepsFile()
    {
        try
        {
            var depsFiles = AppContext.GetData("APP_CONTEXT_DEPS_FILES") as string ?? "";
            foreach (var depsFile in depsFiles.Split(';', StringSplitOptions.RemoveEmptyEntries))
            {
                if (!File.Exists(depsFile))
                    continue;
                using var document = System.Text.Json.JsonDocument.Parse(File.ReadAllText(depsFile));
                if (!document.RootElement.TryGetProperty("libraries", out var libraries))
                    continue;
                foreach (var library in libraries.EnumerateObject())
                {
                    if (library.Name.StartsWith("libtorch-", StringComparison.OrdinalIgnoreCase))
                        return library.Name.Replace('/', ' ');
                }
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or System.Text.Json.JsonException)
        {
        }
        return null;
    }

    public DoctorCheck CheckCpuFeatures()
    {
        var flags = (ReadCpuInfoField("flags") ?? "").Split(' ', StringSplitOptions.RemoveEmptyEntries).ToHashSet(StringComparer.Ordinal);
        var present = ReportedCpuFlags.Where(flags.Contains).ToList();
        var absent = ReportedCpuFlags.Where(flag => !flags.Contains(flag)).ToList();
        var listing = $"has: {(present.Count == 0 ? "none" : string.Join(' ', present))}; lacks: {(absent.Count == 0 ? "none" : string.Join(' ', absent))}";
        var fastBf16 = MetaStone.Model.CpuFeatures.IsFastBf16(flags);
        if (!flags.Contains("avx2"))
            return new DoctorCheck("cpu-features", DoctorStatus.Warn, listing,
                "Without AVX2 libtorch falls back to slow generic kernels; expect very low tokens/s. Use fp32 and a newer x86-64 CPU.");
        // The native kernel's own verdict is about this machine (the flags may come from a cpuinfo file given to the doctor).
        string? nativeProblem = MetaStone.Model.CpuFeatures.NativeBf16Unavailable;
        string batched = nativeProblem is null
            ? "batched bf16 decode runs in the native AVX512-BF16 kernel"
            : $"batched bf16 decode runs in torch (native kernel off here: {nativeProblem})";
        return fastBf16
            ? new DoctorCheck("cpu-features", DoctorStatus.Ok, listing + $"; bf16 runs natively: serve in bf16; {batched}", null)
            : new DoctorCheck("cpu-features", DoctorStatus.Ok, listing + "; no bf16 hardware (avx512_bf16/amx_bf16): serve in fp32, bf16 is emulated and slow here", null);
    }

    // --- services and tools ---------------------------------------------------------------------------------------

    /// <summary>Raw RESP <c>PING</c>: no client library, so the doctor works before anything else is set up.</summary>
    public async Task<DoctorCheck> CheckRedisAsync(CancellationToken cancellationToken = default)
    {
        const string name = "redis";
        var redisServer = ExternalTools.FindOnPath("redis-server");
        var onPath = redisServer is null ? "redis-server not on PATH" : $"redis-server at {redisServer}";
        string? failure;
        try
        {
            var reply = await PingAsync(cancellationToken).ConfigureAwait(false);
            if (reply.StartsWith("+PONG", StringComparison.Ordinal))
                return new DoctorCheck(name, DoctorStatus.Ok, $"{Redis} answered +PONG; {onPath}", null);
            failure = $"{Redis} answered '{reply}' instead of +PONG";
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            failure = $"{Redis} did not answer within {RedisTimeout.TotalSeconds.ToString(CultureInfo.InvariantCulture)} s";
        }
        catch (Exception ex) when (ex is SocketException or IOException)
        {
            failure = $"{Redis} unreachable: {ex.Message}";
        }

        // Warn, not fail: only the cluster needs Redis (membership and jobs); tests start their own.
        var start = $"redis-server --port {Redis.Port} --daemonize yes";
        var fix = redisServer is null
            ? $"Install it with `sudo apt-get install redis-server`, then start one: `{start}` (only the cluster needs Redis)."
            : $"Start one: `{start}` (only the cluster needs Redis).";
        return new DoctorCheck(name, DoctorStatus.Warn, $"{failure}; {onPath}", fix);
    }

    private async Task<string> PingAsync(CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(RedisTimeout);
        using var client = new TcpClient();
        await client.ConnectAsync(Redis.Host, Redis.Port, timeout.Token).ConfigureAwait(false);
        var stream = client.GetStream();
        await stream.WriteAsync("PING\r\n"u8.ToArray(), timeout.Token).ConfigureAwait(false);
        // A RESP simple reply is one line; read until CRLF or the server closes.
        var reply = new StringBuilder();
        var buffer = new byte[256];
        while (reply.Length < 1024 && !reply.ToString().Contains("\r\n", StringComparison.Ordinal))
        {
            var read = await stream.ReadAsync(buffer, timeout.Token).ConfigureAwait(false);
            if (read == 0)
                break;
            reply.Append(Encoding.ASCII.GetString(buffer, 0, read));
        }
        return reply.ToString().TrimEnd('\r', '\n');
    }

    public static DoctorCheck CheckNode()
    {
        const string name = "node";
        var node = ExternalTools.FindOnPath("node");
        var npm = ExternalTools.FindOnPath("npm");
        var nodeVersion = node is null ? null : ExternalTools.TryRun(node, "--version", TimeSpan.FromSeconds(10))?.Trim();
        var npmVersion = npm is null ? null : ExternalTools.TryRun(npm, "--version", TimeSpan.FromSeconds(20))?.Trim();
        var detail = $"node {nodeVersion ?? "not found"}, npm {npmVersion ?? "not found"} (only the tokenizer parity tests need them)";
        return nodeVersion is not null && npmVersion is not null
            ? new DoctorCheck(name, DoctorStatus.Info, detail, null)
            : new DoctorCheck(name, DoctorStatus.Info, detail, "sudo apt-get install nodejs npm");
    }

    public IReadOnlyList<string> FontDirectories { get; init; } = ["/usr/share/fonts", "/usr/local/share/fonts"];

    /// <summary>The sweep plots draw their labels with a TrueType font read from disk (SkiaSharp without fontconfig).</summary>
    public DoctorCheck CheckFonts()
    {
        const string name = "fonts";
        var font = FontDirectories.Where(Directory.Exists)
            .SelectMany(d => Directory.EnumerateFiles(d, "*.ttf", SearchOption.AllDirectories)).FirstOrDefault();
        return font is not null
            ? new DoctorCheck(name, DoctorStatus.Ok, $"TrueType fonts found (e.g. {font}): sweep plots get labels", null)
            : new DoctorCheck(name, DoctorStatus.Warn, $"no .ttf font under {string.Join(", ", FontDirectories)}: sweep plots would have no labels",
                "sudo apt-get install fonts-dejavu-core");
    }

    // --- helpers --------------------------------------------------------------------------------------------------

    private enum Distro { Other, Debian12, Debian13OrNewer, Ubuntu2204, Ubuntu2404OrNewer }

    private static Distro DistroOf(IReadOnlyDictionary<string, string> release)
    {
        var id = release.GetValueOrDefault("ID") ?? "";
        var version = release.GetValueOrDefault("VERSION_ID") ?? "";
        var codename = release.GetValueOrDefault("VERSION_CODENAME") ?? "";
        double.TryParse(version, NumberStyles.Float, CultureInfo.InvariantCulture, out var number);
        return id switch
        {
            "debian" when version == "12" => Distro.Debian12,
            // testing/sid have no VERSION_ID but do have a newer codename.
            "debian" when number >= 13 || (version.Length == 0 && codename is "trixie" or "forky" or "sid") => Distro.Debian13OrNewer,
            "ubuntu" when version == "22.04" => Distro.Ubuntu2204,
            "ubuntu" when number >= 24.04 => Distro.Ubuntu2404OrNewer,
            _ => Distro.Other,
        };
    }

    private Dictionary<string, string> ReadOsRelease()
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var line in ReadLinesOrEmpty(OsReleasePath))
        {
            var equals = line.IndexOf('=');
            if (equals <= 0 || line.StartsWith('#'))
                continue;
            values[line[..equals].Trim()] = line[(equals + 1)..].Trim().Trim('"', '\'');
        }
        return values;
    }

    private string? ReadCpuInfoField(string field)
    {
        foreach (var line in ReadLinesOrEmpty(CpuInfoPath))
        {
            var colon = line.IndexOf(':');
            if (colon > 0 && line[..colon].Trim() == field)
                return line[(colon + 1)..].Trim();
        }
        return null;
    }

    private long? ReadMemInfoBytes(string field)
    {
        foreach (var line in ReadLinesOrEmpty(MemInfoPath))
        {
            if (!line.StartsWith(field + ":", StringComparison.Ordinal))
                continue;
            var parts = line[(field.Length + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            // /proc/meminfo reports "kB", which the kernel means as KiB.
            if (parts.Length > 0 && long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var kibibytes))
                return kibibytes * 1024;
        }
        return null;
    }

    private static IEnumerable<string> ReadLinesOrEmpty(string path)
    {
        try
        {
            return File.ReadAllLines(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }

    private static string FormatGiB(long bytes) => $"{(bytes / (double)(1L << 30)).ToString("0.0", CultureInfo.InvariantCulture)} GiB";

    private static string FlattenMessages(Exception exception)
    {
        var messages = new List<string>();
        for (var current = exception; current is not null; current = current.InnerException)
        {
            if (!messages.Contains(current.Message))
                messages.Add(current.Message);
        }
        return string.Join(" -> ", messages);
    }
}
