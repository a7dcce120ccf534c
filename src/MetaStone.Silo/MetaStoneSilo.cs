using System.Net;
using MetaStone.Grains;
using MetaStone.Grains.Engines;
using MetaStone.Grains.Durability;
using MetaStone.Model;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Metrics;
using Orleans.Configuration;
using Orleans.Dashboard;
using Orleans.Hosting;
using Orleans.Runtime.Hosting;
using StackExchange.Redis;

namespace MetaStone.Silo;

/// <summary>
/// Builds and starts a MetaStone silo: models are loaded onto their devices first, then the silo joins the
/// cluster, so it is never offered work it cannot do. Used by the silo executable, <c>metastone silo</c> and the
/// embedded single-process mode of <c>metastone ask</c>.
/// </summary>
public static partial class MetaStoneSilo
{
    public static async Task<IHost> StartAsync(SiloSettings settings, Action<ILoggingBuilder>? logging = null, CancellationToken cancellationToken = default)
    {
        settings.Validate();
        // Before anything joins the cluster: a second silo on a busy port would supersede (kill) the one listening there.
        PortCheck.EnsureFree(settings.Redis is null ? IPAddress.Loopback : IPAddress.Parse(settings.AdvertisedAddress),
            (settings.SiloPort, "silo"), (settings.GatewayPort, "gateway"));
        PortCheck.EnsureFree(IPAddress.Parse(settings.HttpAddress), settings.HttpPorts.Select(p => (p, p == settings.DashboardPort ? "dashboard" : "metrics")).ToArray());
        ConnectionMultiplexer? redis = settings.Redis is null ? null : await RedisConnection.ConnectAsync(settings.Redis);
        var engines = LoadEngines(settings);
        try
        {
            // A silo with a dashboard or metrics port is an ASP.NET Core host (both are HTTP endpoints); otherwise a plain host.
            IHostApplicationBuilder builder = settings.HttpPorts.Count > 0
                ? WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [], ApplicationName = "MetaStone.Silo" })
                : Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = [], ApplicationName = "MetaStone.Silo" });
            builder.Logging.ClearProviders();
            builder.Logging.SetMinimumLevel(LogLevel.Warning);
            builder.Logging.AddFilter("MetaStone", LogLevel.Information);
            if (logging is null)
            {
                builder.Logging.AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss.fff "; });
                // Logs go to stderr: stdout carries only the silo's own lines ("… ready: …", "… stopped"), which scripts wait for.
                builder.Services.Configure<Microsoft.Extensions.Logging.Console.ConsoleLoggerOptions>(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
            }
            else logging(builder.Logging);
            // The drain (up to the grace) and Orleans' own stop (leave membership, deactivate grains) fit in the timeout.
            builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = settings.ShutdownGrace + TimeSpan.FromSeconds(30));
            if (settings.MetricsPort > 0)
            {
                // This silo's engines and grains (meter MetaStone) and Orleans' own runtime meter, in Prometheus format.
                builder.Services.AddOpenTelemetry().WithMetrics(metrics => metrics
                    .AddMeter(MetaStoneMetrics.MeterName, "Microsoft.Orleans")
                    .AddPrometheusExporter());
            }
            builder.UseOrleans(silo =>
            {
                Configure(silo, settings, redis, engines);
                if (settings.DashboardPort > 0) silo.AddDashboard();
            });
            IHost host;
            if (builder is WebApplicationBuilder web)
            {
                web.WebHost.UseUrls(settings.HttpPorts.Select(p => $"http://{HttpHost(settings.HttpAddress)}:{p}").ToArray());
                var app = web.Build();
                if (settings.DashboardPort > 0) app.MapOrleansDashboard().RequireHost($"*:{settings.DashboardPort}");
                if (settings.MetricsPort > 0) app.MapPrometheusScrapingEndpoint("/metrics").RequireHost($"*:{settings.MetricsPort}");
                host = app;
            }
            else host = ((HostApplicationBuilder)builder).Build();
            await host.StartAsync(cancellationToken);
            return host;
        }
        catch
        {
            engines.Dispose();
            redis?.Dispose();
            throw;
        }
    }

    private static string HttpHost(string address) => IPAddress.Parse(address).AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{address}]" : address;

    private static void Configure(ISiloBuilder silo, SiloSettings settings, ConnectionMultiplexer? redis, ReplicaEngines engines)
    {
        silo.Configure<ClusterOptions>(o => { o.ClusterId = settings.ClusterId; o.ServiceId = settings.ServiceId; });
        silo.Configure<SiloOptions>(o => o.SiloName = settings.Name);
        if (redis is null)
        {
            silo.UseLocalhostClustering(settings.SiloPort, settings.GatewayPort,
                settings.PrimarySiloPort is int primary ? new IPEndPoint(IPAddress.Loopback, primary) : null,
                settings.ServiceId, settings.ClusterId);
            // Jobs live as long as the process; sweeps in files when a directory is given, so a later process resumes them.
            silo.Services.AddGrainStorage(StorageNames.Jobs, (_, _) => new LocalGrainStorage(new JsonGrainStateSerializer()));
            silo.Services.AddGrainStorage(StorageNames.Sweeps, (_, _) => new LocalGrainStorage(new JsonGrainStateSerializer(), settings.SweepDirectory));
            silo.UseInMemoryReminderService();
        }
        else
        {
            silo.ConfigureEndpoints(IPAddress.Parse(settings.AdvertisedAddress), settings.SiloPort, settings.GatewayPort);
            silo.UseRedisClustering(o =>
            {
                o.ConfigurationOptions = ConfigurationOptions.Parse(settings.Redis!);
                o.CreateMultiplexer = _ => Task.FromResult<(IConnectionMultiplexer, bool)>((redis, true));
                // Rows of silos from earlier runs of a throw-away cluster expire instead of being probed for 90 s.
                if (settings.FastFailureDetection) o.EntryExpiry = TimeSpan.FromMinutes(10);
            });
            silo.Services.AddSingleton(sp =>
            {
                var log = sp.GetRequiredService<ILoggerFactory>().CreateLogger("MetaStone.RedisOutage");
                return new RedisOutagePolicy(TimeSpan.FromSeconds(settings.RedisOutageToleranceSeconds), message => LogRedisOutage(log, message));
            });
            // Job, candidate, admission and sweep records; reminders that resume the runs of a dead silo. All on the one
            // connection. Records expire a retention period after their last write (a running job writes as it goes).
            foreach (var storage in new[] { StorageNames.Jobs, StorageNames.Sweeps })
                silo.AddRedisGrainStorage(storage, (Orleans.Persistence.RedisStorageOptions o) =>
                {
                    o.ConfigurationOptions = ConfigurationOptions.Parse(settings.Redis!);
                    o.CreateMultiplexer = _ => Task.FromResult<(IConnectionMultiplexer, bool)>((redis, true));
                    o.GrainStorageSerializer = new JsonGrainStateSerializer();
                    o.EntryExpiry = settings.JobRetention;
                    o.DeleteStateOnClear = true;
                });
            silo.UseRedisReminderService(o =>
            {
                o.ConfigurationOptions = ConfigurationOptions.Parse(settings.Redis!);
                o.CreateMultiplexer = _ => Task.FromResult<(IConnectionMultiplexer, bool)>((redis, true));
            });
            silo.Services.AddSingleton<IConnectionMultiplexer>(redis);
            // Default Orleans Redis membership key: {ServiceId}/members/{ClusterId}.
            string membershipKey = $"{settings.ServiceId}/members/{settings.ClusterId}";
            silo.Services.AddHostedService(sp => new MembershipWatchdog(redis, membershipKey, sp.GetRequiredService<Orleans.Runtime.ILocalSiloDetails>(),
                sp.GetRequiredService<IHostApplicationLifetime>(), sp.GetRequiredService<ILogger<MembershipWatchdog>>()));
        }
        if (settings.FastFailureDetection)
        {
            // Values from Orleans' own SilosStopTests: a killed silo is declared dead within a few seconds.
            silo.Configure<ClusterMembershipOptions>(o =>
            {
                o.ProbeTimeout = TimeSpan.FromSeconds(1);
                o.NumMissedProbesLimit = 1;
                o.NumVotesForDeathDeclaration = 1;
                o.TableRefreshTimeout = TimeSpan.FromSeconds(1);
                o.IAmAliveTablePublishTimeout = TimeSpan.FromSeconds(2);
                o.DeathVoteExpirationTimeout = TimeSpan.FromSeconds(10);
            });
        }
        silo.Services.AddSingleton(engines);
        var observed = MetaStoneMetrics.Observe(engines);
        silo.Services.AddHostedService(sp => new StopObserving(observed));
        silo.AddMetaStoneGrains(new ReplicaPlacementOptions(ReplicaPlacementOptions.ParsePolicy(settings.Placement)),
            new SiloDrainOptions(settings.ShutdownGrace), new AdmissionOptions(settings.MaxRunningJobs),
            redis is null ? DurabilityOptions.SingleProcess : DurabilityOptions.Cluster);
    }

    /// <summary>
    /// Runs a started silo until SIGTERM / SIGINT (the host's console lifetime turns both into a stop request) or
    /// <paramref name="cancellationToken"/>, then stops it gracefully: <see cref="SiloDrain"/> lets in-flight candidates
    /// finish within the grace period, then the silo leaves the cluster. Returns once the host has stopped.
    /// </summary>
    public static async Task RunUntilStoppedAsync(IHost host, CancellationToken cancellationToken = default)
    {
        var lifetime = host.Services.GetRequiredService<IHostApplicationLifetime>();
        var stopping = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using (lifetime.ApplicationStopping.Register(() => stopping.TrySetResult()))
        using (cancellationToken.Register(() => stopping.TrySetResult()))
            await stopping.Task;
        // Bounded by HostOptions.ShutdownTimeout (grace + 30 s). With the membership table lost there is nothing to
        // leave gracefully (every table update fails), so the stop is cut short.
        using var cut = SiloExit.Code == SiloExit.MembershipLost ? new CancellationTokenSource(TimeSpan.FromSeconds(5)) : new CancellationTokenSource();
        try { await host.StopAsync(cut.Token); }
        catch (OperationCanceledException) when (cut.IsCancellationRequested) { }
    }

    /// <summary>Loads one engine per device, before the silo joins the cluster.</summary>
    public static ReplicaEngines LoadEngines(SiloSettings settings)
    {
        if (settings.ComputeThreads > 0) TorchSharp.torch.set_num_threads(settings.ComputeThreads);
        var loaded = new List<ICandidateEngine>();
        try
        {
            foreach (var device in settings.DeviceList)
            {
                loaded.Add(settings.Engine switch
                {
                    "model" => ReflectiveModelEngine.LoadFrom(settings.Model!, new ModelLoadOptions
                    {
                        Device = device, MaxBatch = settings.MaxBatch, MaxSequenceLength = settings.MaxSequenceLength,
                        MinDecodeStep = TimeSpan.FromMilliseconds(settings.MinDecodeStepMilliseconds),
                    }),
                    "instant" => new SimulatedEngine(device, TimeSpan.Zero, TimeSpan.Zero, settings.SimulatedTokens, settings.MaxBatch),
                    _ => new SimulatedEngine(device, TimeSpan.FromMilliseconds(settings.SimulatedStepMilliseconds),
                        TimeSpan.FromMilliseconds(settings.SimulatedPerSequenceMilliseconds), settings.SimulatedTokens, settings.MaxBatch),
                });
            }
        }
        catch
        {
            foreach (var engine in loaded) engine.Dispose();
            throw;
        }
        return new ReplicaEngines(settings.Name, loaded);
    }

    /// <summary>Takes a stopped silo's replicas out of the metrics (several silos can live in one process).</summary>
    private sealed class StopObserving(IDisposable observed) : IHostedService
    {
        public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public Task StopAsync(CancellationToken cancellationToken)
        {
            observed.Dispose();
            return Task.CompletedTask;
        }
    }

    // Log events 1750–1799 (numbering in LogEventIds in MetaStone.Grains).
    [LoggerMessage(EventId = 1751, Level = LogLevel.Warning, Message = "{Message}")]
    private static partial void LogRedisOutage(ILogger logger, string message);
}
