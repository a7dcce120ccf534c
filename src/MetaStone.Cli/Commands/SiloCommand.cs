using System.CommandLine;
using MetaStone.Cli.Cluster;
using MetaStone.Cli.Training;
using MetaStone.Silo;
using Microsoft.Extensions.Hosting;

namespace MetaStone.Cli.Commands;

/// <summary><c>metastone silo --redis host:port --model DIR --device cpu|cuda:N</c>: runs one silo of a Redis-clustered MetaStone cluster until Ctrl+C.</summary>
public sealed class SiloCommand : ICliVerb
{
    public static Command Create()
    {
        var redis = new Option<string?>("--redis") { Description = "Redis holding membership and jobs (host:port). Without it: a single localhost silo.", HelpName = "host:port" };
        var model = new Option<string?>("--model") { Description = "Model directory (default: models/metastone-tiny)." };
        var device = new Option<string>("--device") { Description = "Comma-separated devices, one replica each: cpu, cuda:0, …", DefaultValueFactory = _ => "cpu" };
        var name = new Option<string?>("--name") { Description = "Unique silo name (default: host name and process id)." };
        var clusterId = new Option<string>("--cluster-id") { Description = "Orleans ClusterId and ServiceId.", DefaultValueFactory = _ => "metastone" };
        var siloPort = new Option<int>("--silo-port") { DefaultValueFactory = _ => 11111 };
        var gatewayPort = new Option<int>("--gateway-port") { DefaultValueFactory = _ => 30000 };
        var advertise = new Option<string>("--advertised-address") { Description = "IP other silos and clients dial.", DefaultValueFactory = _ => "127.0.0.1" };
        var maxBatch = new Option<int>("--max-batch") { Description = "Sequences decoded together per device.", DefaultValueFactory = _ => 32 };
        var threads = new Option<int>("--threads") { Description = "Torch compute threads (0 = default).", DefaultValueFactory = _ => 0 };
        var engine = new Option<string>("--engine") { Description = "model | simulated | instant (benchmarks only).", DefaultValueFactory = _ => "model" };
        var grace = new Option<double>("--shutdown-grace") { Description = "Seconds a stopping silo (SIGTERM, Ctrl+C) lets in-flight candidates finish before leaving the cluster.", DefaultValueFactory = _ => 30 };
        var outage = new Option<double>("--redis-outage-tolerance") { Description = "Seconds a running job waits through a Redis outage (restart, fail-over) before it fails.", DefaultValueFactory = _ => 60 };
        var dashboardPort = new Option<int>("--dashboard-port") { Description = "Serve Orleans' dashboard on this port (0 = none).", DefaultValueFactory = _ => 0 };
        var metricsPort = new Option<int>("--metrics-port") { Description = "Serve Prometheus metrics at /metrics on this port (0 = none; may equal --dashboard-port).", DefaultValueFactory = _ => 0 };
        var httpAddress = new Option<string>("--http-address") { Description = "Address the dashboard and metrics listen on (0.0.0.0 = every interface).", DefaultValueFactory = _ => "127.0.0.1" };
        var command = new Command("silo", "Run a MetaStone silo: load the model on each device, then join the cluster and serve candidates.")
        {
            redis, model, device, name, clusterId, siloPort, gatewayPort, advertise, maxBatch, threads, engine, grace, outage,
            dashboardPort, metricsPort, httpAddress,
        };
        command.SetAction((parse, cancellationToken) => ClusterVerb.RunAsync(parse, async () =>
        {
            var settings = new SiloSettings
            {
                Redis = parse.GetValue(redis),
                Model = parse.GetValue(model) ?? RepoPaths.DefaultModel,
                Devices = parse.GetValue(device)!,
                ClusterId = parse.GetValue(clusterId)!,
                ServiceId = parse.GetValue(clusterId)!,
                SiloPort = parse.GetValue(siloPort),
                GatewayPort = parse.GetValue(gatewayPort),
                AdvertisedAddress = parse.GetValue(advertise)!,
                MaxBatch = parse.GetValue(maxBatch),
                ComputeThreads = parse.GetValue(threads),
                Engine = parse.GetValue(engine)!,
                ShutdownGraceSeconds = parse.GetValue(grace),
                RedisOutageToleranceSeconds = parse.GetValue(outage),
                DashboardPort = parse.GetValue(dashboardPort),
                MetricsPort = parse.GetValue(metricsPort),
                HttpAddress = parse.GetValue(httpAddress)!,
            };
            if (parse.GetValue(name) is { } n) settings.Name = n;
            using var host = await MetaStoneSilo.StartAsync(settings, cancellationToken: cancellationToken);
            Console.WriteLine($"metastone silo {settings.Name} ready: silo {settings.AdvertisedAddress}:{settings.SiloPort}, gateway {settings.GatewayPort}, devices {settings.Devices}{settings.HttpDescription}");
            // SIGTERM / SIGINT (Ctrl+C) / docker stop: drain within the grace period, leave the cluster, exit 0.
            await MetaStoneSilo.RunUntilStoppedAsync(host, cancellationToken);
            Console.WriteLine($"metastone silo {settings.Name} stopped");
            return SiloExit.Code; // 0, or 3 when the membership table was lost (MembershipWatchdog)
        }));
        return command;
    }
}
