using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace MetaStone.Deploy.Tests;

/// <summary>
/// The deployment invariants every compose file must keep (checked-in or generated). Returns readable
/// problems instead of asserting, so one run lists everything wrong with a file.
/// </summary>
internal static class ComposeRules
{
    /// <summary>Keys of the silo configuration contract (deploy/README.md); compose must set every one.</summary>
    public static readonly string[] SiloContractKeys =
    [
        "Orleans__ClusterId", "Orleans__ServiceId", "Orleans__Name", "Orleans__Endpoints__AdvertisedIPAddress",
        "Orleans__Endpoints__SiloPort", "Orleans__Endpoints__GatewayPort",
        "MetaStone__Redis", "MetaStone__Model", "MetaStone__Devices", "MetaStone__MaxBatch",
    ];

    /// <summary>What a client needs to find the cluster.</summary>
    public static readonly string[] ClientContractKeys = ["Orleans__ClusterId", "Orleans__ServiceId", "MetaStone__Redis"];

    /// <summary>Images used as they are, not built from deploy/.</summary>
    private static readonly string[] PublicImages = ["redis:7"];

    public static bool IsSilo(ComposeService service) => service.Image?.StartsWith("metastone-silo-", StringComparison.Ordinal) == true;
    public static bool IsGpuSilo(ComposeService service) => service.Image?.StartsWith("metastone-silo-gpu", StringComparison.Ordinal) == true;
    public static bool IsClient(ComposeService service) => service.Image?.StartsWith("metastone-client", StringComparison.Ordinal) == true;
    /// <summary>The OpenAI-compatible gateway: the client image running <c>metastone serve</c>.</summary>
    public static bool IsGateway(ComposeService service) => IsClient(service) && service.Command.FirstOrDefault() == "serve";

    /// <summary>Silo keys the compose files set beyond the contract: Orleans' dashboard and the Prometheus endpoint on every silo.</summary>
    public static readonly string[] SiloHttpPortKeys = ["MetaStone__DashboardPort", "MetaStone__MetricsPort"];

    public static IReadOnlyList<string> Check(ComposeFile file)
    {
        var problems = new List<string>();
        void Problem(string text) => problems.Add($"{file.Label}: {text}");

        foreach (var name in Interpolation.VariablesWithoutDefault(file.Text).Distinct())
            Problem($"variable {name} has no default: the file must work without a .env");

        var redis = CheckRedis(file, Problem);
        var silos = file.Services.Where(IsSilo).ToList();
        var clients = file.Services.Where(IsClient).ToList();
        if (silos.Count == 0) Problem("no silo service (image metastone-silo-*)");
        if (clients.Count(c => !IsGateway(c)) == 0) Problem("no client service (image metastone-client)");

        CheckSilos(file, silos, redis, Problem);
        CheckClients(clients.Where(c => !IsGateway(c)).ToList(), Problem);
        CheckGateway(clients.Where(IsGateway).ToList(), silos, redis, Problem);
        CheckSharedCluster(file, silos.Concat(clients).ToList(), redis, Problem);
        CheckHostPorts(file, Problem);
        CheckImages(file, Problem);
        return problems;
    }

    private static ComposeService? CheckRedis(ComposeFile file, Action<string> problem)
    {
        var redis = file.Services.Where(service => service.Image?.StartsWith("redis:", StringComparison.Ordinal) == true).ToList();
        if (redis.Count != 1)
        {
            problem($"expected exactly one Redis service, found {redis.Count}");
            return null;
        }
        var service = redis[0];
        var test = service.HealthcheckTest;
        if (!test.Any(part => part.Contains("redis-cli", StringComparison.Ordinal)) || !test.Any(part => part.Contains("ping", StringComparison.Ordinal)))
            problem($"{service.Name}: health check must run `redis-cli ping`, is [{string.Join(", ", test)}]");
        var command = service.Command.ToList();
        var appendOnly = command.IndexOf("--appendonly");
        if (appendOnly < 0 || appendOnly + 1 >= command.Count || command[appendOnly + 1] != "yes")
            problem($"{service.Name}: must run with --appendonly yes (job records and membership survive restarts), command is [{string.Join(" ", command)}]");
        var data = service.Volumes.FirstOrDefault(mount => mount.Target == "/data");
        var declared = file.Root.GetValueOrDefault("volumes") as Dictionary<string, object?>;
        if (data is null || data.Type != "volume" || declared?.ContainsKey(data.Source) != true)
            problem($"{service.Name}: /data must be a named volume declared under top-level volumes (persistence), is {data?.ToString() ?? "unmounted"}");
        return service;
    }

    private static void CheckSilos(ComposeFile file, List<ComposeService> silos, ComposeService? redis, Action<string> problem)
    {
        var gpuIds = new Dictionary<string, string>(StringComparer.Ordinal);
        var names = new Dictionary<string, string>(StringComparer.Ordinal);
        var siloEndpoints = new Dictionary<string, string>(StringComparer.Ordinal);
        var gatewayEndpoints = new Dictionary<string, string>(StringComparer.Ordinal);
        var containerPorts = new Dictionary<int, string>();
        foreach (var silo in silos)
        {
            var env = silo.Environment;
            var missing = SiloContractKeys.Where(key => string.IsNullOrEmpty(env.GetValueOrDefault(key))).ToList();
            if (missing.Count > 0) problem($"{silo.Name}: missing silo settings {string.Join(", ", missing)}");

            if (redis is not null && silo.DependsOn.GetValueOrDefault(redis.Name) != "service_healthy")
                problem($"{silo.Name}: must depend on {redis.Name} with condition service_healthy");

            CheckDevice(silo, gpuIds, problem);

            if (env.GetValueOrDefault("Orleans__Name") is { Length: > 0 } name && !names.TryAdd(name, silo.Name))
                problem($"{silo.Name}: Orleans__Name '{name}' is also used by {names[name]}");

            // Ports: distinct across the silos of the file (in multi-machine mode they all advertise one host IP),
            // and published 1:1 so <host ip>:<advertised port> reaches the container.
            var siloPort = Port(silo, "Orleans__Endpoints__SiloPort", problem);
            var gatewayPort = Port(silo, "Orleans__Endpoints__GatewayPort", problem);
            foreach (var port in new[] { siloPort, gatewayPort }.Where(port => port > 0))
            {
                if (!containerPorts.TryAdd(port, silo.Name) && containerPorts[port] != silo.Name)
                    problem($"{silo.Name}: port {port} is also a silo/gateway port of {containerPorts[port]}");
                if (!silo.Ports.Any(published => published.Published == port && published.Target == port))
                    problem($"{silo.Name}: port {port} must be published as {port}:{port} (same number outside and inside)");
            }
            if (siloPort == gatewayPort && siloPort > 0) problem($"{silo.Name}: silo and gateway port are both {siloPort}");

            // The dashboard and metrics on every silo, on their own ports, published 1:1, listening on every interface of the container.
            foreach (var key in SiloHttpPortKeys)
            {
                var port = Port(silo, key, problem);
                if (port <= 0) continue;
                if (!containerPorts.TryAdd(port, silo.Name))
                    problem($"{silo.Name}: {key} {port} is also a port of {containerPorts[port]}");
                if (!silo.Ports.Any(published => published.Published == port && published.Target == port))
                    problem($"{silo.Name}: {key} {port} must be published as {port}:{port}");
            }
            if (env.GetValueOrDefault("MetaStone__HttpAddress") != "0.0.0.0")
                problem($"{silo.Name}: MetaStone__HttpAddress must be 0.0.0.0 (a published port reaches the container's interface, not its loopback)");

            var networks = silo.Networks;
            if (networks.Count != 1)
                problem($"{silo.Name}: must join exactly one network (Orleans picks an address per network otherwise), joins {networks.Count}");
            var staticIp = networks.Values.FirstOrDefault();
            var advertised = env.GetValueOrDefault("Orleans__Endpoints__AdvertisedIPAddress") ?? "";
            if (!IPAddress.TryParse(advertised, out var advertisedIp) || advertisedIp.AddressFamily != AddressFamily.InterNetwork)
                problem($"{silo.Name}: AdvertisedIPAddress must be an IPv4 address (a name may resolve to a VIP or another container), is '{advertised}'");
            if (staticIp is null)
                problem($"{silo.Name}: needs a static ipv4_address on its network (it is the default advertised address)");
            else
                CheckStaticAddress(file, silo, networks.Keys.First(), staticIp, problem);
            siloEndpoints.TryAdd($"{advertised}:{siloPort}", silo.Name);
            gatewayEndpoints.TryAdd($"{advertised}:{gatewayPort}", silo.Name);

            var model = env.GetValueOrDefault("MetaStone__Model") ?? "";
            var mount = silo.Volumes.FirstOrDefault(volume => model == volume.Target || model.StartsWith(volume.Target.TrimEnd('/') + "/", StringComparison.Ordinal));
            if (mount is null || !mount.ReadOnly)
                problem($"{silo.Name}: the model path '{model}' must be on a read-only mount, is {mount?.ToString() ?? "not mounted"}");
        }
        if (siloEndpoints.Count != silos.Count || gatewayEndpoints.Count != silos.Count)
            problem("two silos advertise the same endpoint (advertised IP + port)");
    }

    private static void CheckDevice(ComposeService silo, Dictionary<string, string> gpuIds, Action<string> problem)
    {
        var device = silo.Environment.GetValueOrDefault("MetaStone__Devices");
        var reservations = silo.DeviceReservations;
        if (!IsGpuSilo(silo))
        {
            if (reservations.Count > 0) problem($"{silo.Name}: a CPU silo must not reserve GPUs");
            if (device != "cpu") problem($"{silo.Name}: a CPU silo must use MetaStone__Devices=cpu, is '{device}'");
            return;
        }
        // The reserved GPU is the only one visible inside the container, always index 0.
        if (device != "cuda:0") problem($"{silo.Name}: MetaStone__Devices must be cuda:0 (device_ids [\"N\"] is index 0 inside), is '{device}'");
        if (reservations.Count != 1)
        {
            problem($"{silo.Name}: must have exactly one device reservation, has {reservations.Count}");
            return;
        }
        var reservation = reservations[0];
        if (reservation.GetValueOrDefault("driver") as string != "nvidia") problem($"{silo.Name}: device driver must be nvidia");
        if (!ComposeService.Strings(reservation.GetValueOrDefault("capabilities")).Contains("gpu")) problem($"{silo.Name}: capabilities must include gpu");
        if (reservation.ContainsKey("count")) problem($"{silo.Name}: use device_ids, not count (count would take any/all GPUs)");
        var ids = ComposeService.Strings(reservation.GetValueOrDefault("device_ids"));
        if (ids.Count != 1)
        {
            problem($"{silo.Name}: must reserve exactly one GPU id, reserves [{string.Join(", ", ids)}]");
            return;
        }
        if (!gpuIds.TryAdd(ids[0], silo.Name)) problem($"{silo.Name}: GPU {ids[0]} is also reserved by {gpuIds[ids[0]]}");
    }

    private static void CheckStaticAddress(ComposeFile file, ComposeService silo, string network, string address, Action<string> problem)
    {
        var config = ComposeService.Path(file.Root, "networks", network, "ipam", "config") as List<object?>;
        var pool = config?.OfType<Dictionary<string, object?>>().FirstOrDefault();
        if (pool?.GetValueOrDefault("subnet") is not string subnet)
        {
            problem($"{silo.Name}: network {network} needs an ipam subnet for static addresses");
            return;
        }
        if (!IPAddress.TryParse(address, out var ip) || !InCidr(ip, subnet))
            problem($"{silo.Name}: ipv4_address {address} is not in {network}'s subnet {subnet}");
        // Docker hands dynamic addresses (Redis, client) out of ip_range: a static silo address inside it could be taken first.
        if (pool.GetValueOrDefault("ip_range") is not string range)
            problem($"network {network}: needs an ip_range so dynamic addresses never take a silo's static one");
        else if (ip is not null && InCidr(ip, range))
            problem($"{silo.Name}: ipv4_address {address} is inside the dynamic ip_range {range}");
    }

    private static void CheckClients(List<ComposeService> clients, Action<string> problem)
    {
        foreach (var client in clients)
        {
            if (!client.Profiles.Contains("client"))
                problem($"{client.Name}: must be under the 'client' profile so `up` starts only the cluster");
            var missing = ClientContractKeys.Where(key => string.IsNullOrEmpty(client.Environment.GetValueOrDefault(key))).ToList();
            if (missing.Count > 0) problem($"{client.Name}: missing client settings {string.Join(", ", missing)}");
        }
    }

    private static void CheckGateway(List<ComposeService> gateways, List<ComposeService> silos, ComposeService? redis, Action<string> problem)
    {
        if (gateways.Count != 1)
        {
            problem($"expected exactly one gateway service (client image, command serve), found {gateways.Count}");
            return;
        }
        var gateway = gateways[0];
        if (gateway.Profiles.Count > 0) problem($"{gateway.Name}: must have no profile so `up` starts it");
        var missing = ClientContractKeys.Where(key => string.IsNullOrEmpty(gateway.Environment.GetValueOrDefault(key))).ToList();
        if (missing.Count > 0) problem($"{gateway.Name}: missing client settings {string.Join(", ", missing)}");
        var command = gateway.Command.ToList();
        var urls = command.IndexOf("--urls");
        var listen = urls >= 0 && urls + 1 < command.Count ? command[urls + 1] : "";
        if (!Uri.TryCreate(listen, UriKind.Absolute, out var uri) || uri.Host != "0.0.0.0")
            problem($"{gateway.Name}: serve must listen on every interface of the container (--urls http://0.0.0.0:PORT), command is [{string.Join(" ", command)}]");
        else if (!gateway.Ports.Any(p => p.Target == uri.Port && p.Published > 0))
            problem($"{gateway.Name}: its port {uri.Port} is not published");
        var test = string.Join(' ', gateway.HealthcheckTest);
        if (!test.Contains("GET /health", StringComparison.Ordinal) || uri is null || !test.Contains($"/{uri.Port} ", StringComparison.Ordinal))
            problem($"{gateway.Name}: the health check must ask GET /health on the gateway's port, is [{test}]");
        foreach (var dependency in silos.Select(s => s.Name).Concat(redis is null ? [] : [redis.Name]))
            if (gateway.DependsOn.GetValueOrDefault(dependency) != "service_healthy")
                problem($"{gateway.Name}: must depend on {dependency} with condition service_healthy");
    }

    private static void CheckSharedCluster(ComposeFile file, List<ComposeService> members, ComposeService? redis, Action<string> problem)
    {
        foreach (var key in ClientContractKeys)
        {
            var values = members.Select(member => member.Environment.GetValueOrDefault(key) ?? "").Distinct().ToList();
            if (values.Count > 1) problem($"silos and clients disagree on {key}: {string.Join(" / ", values)}");
        }
        // A Redis host that names a service of this file must be the Redis service, on its container port.
        foreach (var connection in members.Select(member => member.Environment.GetValueOrDefault("MetaStone__Redis") ?? "").Distinct())
        {
            var host = connection.Split(',')[0].Split(':')[0];
            if (file.Service(host) is not { } target) continue;
            var port = connection.Split(',')[0].Split(':').ElementAtOrDefault(1) ?? "6379";
            if (redis is null || target.Name != redis.Name || port != "6379")
                problem($"MetaStone__Redis '{connection}' does not point at the Redis service's port 6379");
        }
    }

    private static void CheckHostPorts(ComposeFile file, Action<string> problem)
    {
        var seen = new List<(PublishedPort Port, string Service)>();
        foreach (var service in file.Services)
        {
            foreach (var port in service.Ports.Where(port => port.Published > 0))
            {
                // 0.0.0.0 takes the port on every address, so it collides with any binding of that port.
                var clash = seen.FirstOrDefault(other => other.Port.Published == port.Published
                    && (other.Port.HostIp == port.HostIp || other.Port.HostIp == "0.0.0.0" || port.HostIp == "0.0.0.0"));
                if (clash.Service is not null) problem($"host port {port} of {service.Name} collides with {clash.Port} of {clash.Service}");
                seen.Add((port, service.Name));
            }
        }
    }

    private static void CheckImages(ComposeFile file, Action<string> problem)
    {
        foreach (var service in file.Services)
        {
            var image = service.Image ?? "";
            if (PublicImages.Contains(image)) continue;
            if (!image.StartsWith("metastone-", StringComparison.Ordinal))
            {
                problem($"{service.Name}: image '{image}' is neither built by deploy/ nor an allowed public image");
                continue;
            }
            var build = service.Build;
            if (build is null)
            {
                problem($"{service.Name}: image {image} must have a build section (deploy/ Dockerfile)");
                continue;
            }
            var context = Path.GetFullPath(Path.Combine(file.Directory, build.GetValueOrDefault("context") as string ?? "."));
            if (context.TrimEnd('/') != Repo.Root.TrimEnd('/'))
                problem($"{service.Name}: build context must be the repository root (deploy/ Dockerfiles COPY from there), is {context}");
            var dockerfile = build.GetValueOrDefault("dockerfile") as string ?? "Dockerfile";
            if (!File.Exists(Path.Combine(context, dockerfile)))
                problem($"{service.Name}: build.dockerfile {dockerfile} does not exist under {context}");
            // metastone-silo-gpu:tag is built by deploy/Dockerfile.silo-gpu, and so on.
            var expected = "deploy/Dockerfile." + image["metastone-".Length..].Split(':')[0];
            if (dockerfile != expected) problem($"{service.Name}: image {image} must be built by {expected}, is built by {dockerfile}");
        }
    }

    private static int Port(ComposeService service, string key, Action<string> problem)
    {
        var text = service.Environment.GetValueOrDefault(key);
        if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var port) && port is > 0 and < 65536) return port;
        problem($"{service.Name}: {key} must be a port number, is '{text}'");
        return 0;
    }

    public static bool InCidr(IPAddress address, string cidr)
    {
        var parts = cidr.Split('/');
        if (parts.Length != 2 || !IPAddress.TryParse(parts[0], out var network) || !int.TryParse(parts[1], CultureInfo.InvariantCulture, out var bits)) return false;
        var a = address.GetAddressBytes();
        var n = network.GetAddressBytes();
        if (a.Length != 4 || n.Length != 4) return false;
        var mask = bits == 0 ? 0u : uint.MaxValue << (32 - bits);
        uint Value(byte[] b) => (uint)(b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]);
        return (Value(a) & mask) == (Value(n) & mask);
    }
}
