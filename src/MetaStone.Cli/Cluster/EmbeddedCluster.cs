using MetaStone.Cli.Training;
using MetaStone.Client;
using MetaStone.Silo;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Orleans;

namespace MetaStone.Cli.Cluster;

/// <summary>
/// The embedded default of the cluster verbs: one silo in this process on loopback, serving a model directory
/// (the shipped tiny model unless told otherwise), with a client over it. Jobs live in memory.
/// </summary>
public sealed class EmbeddedCluster : IAsyncDisposable
{
    private readonly IHost _silo;

    private EmbeddedCluster(IHost silo, MetaStoneClient client, string model)
    {
        _silo = silo;
        Client = client;
        Model = model;
    }

    public MetaStoneClient Client { get; }
    public string Model { get; }

    /// <param name="sweepDirectory">Where sweeps keep their finished items (so re-running one resumes it); null = memory.</param>
    /// <param name="maxRunningJobs">Admission control: jobs running at once (null = the silo's default).</param>
    /// <param name="dashboardPort">Orleans' dashboard on http://127.0.0.1:PORT/ (0 = none).</param>
    /// <param name="metricsPort">The silo's Prometheus endpoint on http://127.0.0.1:PORT/metrics (0 = none).</param>
    /// <param name="engine">model (default), or instant / simulated: engines that return made-up candidates without a model (tests, benchmarks).</param>
    public static async Task<EmbeddedCluster> StartAsync(string? modelDirectory, string device, int maxBatch, CancellationToken cancellationToken,
        string? sweepDirectory = null, int? maxRunningJobs = null, int dashboardPort = 0, int metricsPort = 0, string engine = "model")
    {
        string dir = modelDirectory ?? RepoPaths.DefaultModel;
        if (engine == "model" && (!Directory.Exists(dir) || !File.Exists(Path.Combine(dir, "config.json"))))
            throw new ArgumentException($"model not found: {dir} (train the tiny model with 'metastone train', pass --model DIR, or name a cluster with --cluster)");
        Console.Error.WriteLine(engine == "model" ? $"starting an embedded silo with {dir} …" : $"starting an embedded silo with the {engine} engine …");
        var silo = await MetaStoneSilo.StartAsync(new SiloSettings
        {
            Name = "embedded", Model = dir, Devices = device, ClusterId = "embedded-" + Environment.ProcessId, MaxBatch = maxBatch,
            SweepDirectory = sweepDirectory,
            ShutdownGraceSeconds = 0, // one process: no other silo to hand work to, stop at once
            SiloPort = ClusterVerb.FreeLoopbackPort(), GatewayPort = ClusterVerb.FreeLoopbackPort(),
            MaxRunningJobs = maxRunningJobs ?? MetaStone.Grains.AdmissionOptions.DefaultMaxRunningJobs,
            DashboardPort = dashboardPort, MetricsPort = metricsPort, Engine = engine,
        }, logging => { }, cancellationToken);
        return new EmbeddedCluster(silo, MetaStoneClient.FromGrainFactory(silo.Services.GetRequiredService<IClusterClient>()), dir);
    }

    public async ValueTask DisposeAsync()
    {
        await Client.DisposeAsync();
        await _silo.StopAsync(TimeSpan.FromSeconds(5));
        _silo.Dispose();
    }
}
