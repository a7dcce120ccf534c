using System.Runtime.CompilerServices;
using MetaStone.Contracts;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans;
using Orleans.Configuration;
using Orleans.Runtime;
using StackExchange.Redis;

namespace MetaStone.Client;

/// <summary>Where a cluster is: the Redis that holds its membership, and its ids.</summary>
public sealed record ClusterConnection(string Redis, string ClusterId = "metastone", string ServiceId = "metastone");

/// <summary>
/// Talks to a MetaStone cluster: submit a job, watch its progress, await its result, cancel it, read its status.
/// Calls survive the loss of a silo: they are reissued (a job id makes submit idempotent, the coordinator resumes
/// the job elsewhere) until <see cref="FailoverPatience"/> runs out.
/// </summary>
public sealed class MetaStoneClient : IAsyncDisposable
{
    /// <summary>How long a call keeps retrying while the cluster recovers from a dead silo.</summary>
    public TimeSpan FailoverPatience { get; init; } = TimeSpan.FromMinutes(2);

    private readonly IGrainFactory _grains;
    private readonly GrainReferences _references;
    private readonly IHost? _ownedHost;

    private MetaStoneClient(IGrainFactory grains, IHost? ownedHost)
    {
        _grains = grains;
        _references = new GrainReferences(grains);
        _ownedHost = ownedHost;
    }

    /// <summary>A client over a grain factory this process already has (an embedded silo's <c>IClusterClient</c>).</summary>
    public static MetaStoneClient FromGrainFactory(IGrainFactory grains) => new(grains, null);

    /// <summary>How long connecting to Redis may take before the client says it is unreachable.</summary>
    public static readonly TimeSpan RedisConnectTimeout = TimeSpan.FromSeconds(3);

    /// <summary>"cannot reach Redis at 'X' (reason); is redis-server running there?" without the library's advice to programmers.</summary>
    public static string UnreachableRedis(string connection, RedisConnectionException e)
    {
        string reason = e.InnerException is { } inner ? inner.Message.Split('\n')[0].Trim()
            : e.FailureType switch
            {
                ConnectionFailureType.UnableToConnect or ConnectionFailureType.UnableToResolvePhysicalConnection => "no connection",
                ConnectionFailureType.AuthenticationFailure => "authentication failed",
                _ => e.FailureType.ToString(),
            };
        return $"cannot reach Redis at '{connection}' ({reason}); is redis-server running there?";
    }

    /// <summary>Connects through Redis clustering: the client finds the silos' gateways in the membership table.</summary>
    public static async Task<MetaStoneClient> ConnectAsync(ClusterConnection cluster, CancellationToken cancellationToken = default)
    {
        // Check Redis first: an unreachable Redis otherwise shows up as a gateway-list timeout much later.
        ConfigurationOptions options;
        try { options = ConfigurationOptions.Parse(cluster.Redis); }
        catch (Exception e) { throw new ArgumentException($"invalid Redis connection string '{cluster.Redis}': {e.Message}"); }
        // One attempt of at most 3 s: the library's default (3 retries × 5 s) took 16 s to say Redis is down.
        options.ConnectTimeout = (int)RedisConnectTimeout.TotalMilliseconds;
        options.ConnectRetry = 1;
        options.AbortOnConnectFail = true;
        ConnectionMultiplexer redis;
        try { redis = await ConnectionMultiplexer.ConnectAsync(options); }
        catch (RedisConnectionException e)
        {
            throw new InvalidOperationException(UnreachableRedis(cluster.Redis, e), e);
        }
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = [], ApplicationName = "MetaStone.Client" });
        builder.Logging.ClearProviders();
        builder.UseOrleansClient(client =>
        {
            client.Configure<ClusterOptions>(o => { o.ClusterId = cluster.ClusterId; o.ServiceId = cluster.ServiceId; });
            client.Configure<GatewayOptions>(o => o.GatewayListRefreshPeriod = TimeSpan.FromSeconds(5));
            client.UseRedisClustering(o =>
            {
                o.ConfigurationOptions = ConfigurationOptions.Parse(cluster.Redis);
                o.CreateMultiplexer = _ => Task.FromResult<(IConnectionMultiplexer, bool)>((redis, true));
            });
            int attempts = 0;
            client.UseConnectionRetryFilter((_, ct) => Task.FromResult(++attempts < 10 && !ct.IsCancellationRequested));
        });
        var host = builder.Build();
        try { await host.StartAsync(cancellationToken); }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            host.Dispose();
            redis.Dispose();
            throw new InvalidOperationException($"cannot connect to cluster '{cluster.ClusterId}' through Redis '{cluster.Redis}': no silo gateway answered ({e.Message})", e);
        }
        return new MetaStoneClient(host.Services.GetRequiredService<IClusterClient>(), host);
    }

    /// <summary>Submits a job and returns its id once the cluster has accepted (and persisted) it.</summary>
    /// <exception cref="ArgumentException">The request is invalid (empty prompt, k out of range, prompt too long…).</exception>
    public async Task<string> SubmitAsync(JobRequest request, string? jobId = null, CancellationToken cancellationToken = default)
    {
        jobId ??= NewJobId();
        await RetryAsync(() => Coordinator(jobId).SubmitAsync(request), cancellationToken);
        return jobId;
    }

    /// <summary>Waits for the job's result.</summary>
    /// <exception cref="KeyNotFoundException">No such job.</exception>
    /// <exception cref="OperationCanceledException">The job was cancelled.</exception>
    /// <exception cref="InvalidOperationException">The job failed.</exception>
    public async Task<JobResult> AwaitResultAsync(string jobId, CancellationToken cancellationToken = default)
    {
        // Follow the job with bounded long polls instead of one call that lasts as long as the job: a client's request
        // forwarded by a live gateway to a silo that then dies is never answered (only the response timeout ends it),
        // whereas a lost poll times out within a minute and is reissued to the coordinator's new activation.
        await foreach (var e in WatchAsync(jobId, cancellationToken))
            if (e.IsTerminal) break;
        return await EndedJobResultAsync(jobId, cancellationToken);
    }

    /// <summary>
    /// The result of a job already seen to end (after <see cref="WatchAsync"/> yielded its terminal event), in one call:
    /// a caller that followed the job itself need not follow it again through <see cref="AwaitResultAsync"/>.
    /// </summary>
    /// <exception cref="OperationCanceledException">The job was cancelled.</exception>
    /// <exception cref="InvalidOperationException">The job failed.</exception>
    public Task<JobResult> EndedJobResultAsync(string jobId, CancellationToken cancellationToken = default) =>
        // The job has ended: the coordinator returns its result at once, or throws why it failed or was cancelled.
        RetryAsync(() => Coordinator(jobId).AwaitResultAsync(cancellationToken), cancellationToken);

    /// <summary>The result of a completed job, or null while it runs.</summary>
    public Task<JobResult?> GetResultAsync(string jobId, CancellationToken cancellationToken = default) =>
        RetryAsync(() => Coordinator(jobId).GetResultAsync(), cancellationToken);

    public Task<JobStatus> GetStatusAsync(string jobId, CancellationToken cancellationToken = default) =>
        RetryAsync(() => Coordinator(jobId).GetStatusAsync(), cancellationToken);

    public Task<JobStatus> CancelAsync(string jobId, string reason = "cancelled by the client", CancellationToken cancellationToken = default) =>
        RetryAsync(() => Coordinator(jobId).CancelAsync(reason), cancellationToken);

    /// <summary>Submits and awaits in one call.</summary>
    public async Task<JobResult> RunAsync(JobRequest request, CancellationToken cancellationToken = default) =>
        await AwaitResultAsync(await SubmitAsync(request, cancellationToken: cancellationToken), cancellationToken);

    /// <summary>
    /// Progress of a job until it ends (the last event is Completed, Failed or Cancelled). Each event is yielded
    /// once, also when the job's coordinator moves to another silo and replays what it found in its record.
    /// </summary>
    public async IAsyncEnumerable<ProgressEvent> WatchAsync(string jobId, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        string? runId = null;
        int after = -1;
        var seen = new HashSet<(ProgressKind, int?)>();
        while (true)
        {
            var page = await RetryAsync(() => Coordinator(jobId).GetProgressAsync(runId, after, TimeSpan.FromSeconds(10), cancellationToken), cancellationToken);
            if (page.RunId != runId) (runId, after) = (page.RunId, -1);
            foreach (var e in page.Events)
            {
                after = Math.Max(after, e.Sequence);
                if (!seen.Add((e.Kind, e.CandidateIndex))) continue;
                yield return e;
                if (e.IsTerminal) yield break;
            }
        }
    }

    /// <summary>Every live replica with its current load (asked of each replica, not the registry's last report).</summary>
    public async Task<IReadOnlyList<ReplicaLoad>> GetReplicasAsync(CancellationToken cancellationToken = default)
    {
        var listed = await RetryAsync(() => _grains.GetGrain<IReplicaRegistryGrain>(0).ListAsync(), cancellationToken);
        var live = await Task.WhenAll(listed.Select(async r =>
        {
            try { return await _grains.GetGrain<IReplicaGrain>(r.Replica).GetLoadAsync(); }
            catch (Exception e) when (ClusterFaults.IsSiloLoss(e)) { return null; }
        }));
        return live.OfType<ReplicaLoad>().ToList();
    }

    /// <summary>The cluster's grains, for operator tools and tests that go beyond this API (e.g. Orleans' management grain).</summary>
    public IGrainFactory Grains => _grains;

    /// <summary>The jobs running in the cluster (admitted, not ended) and the submissions refused at its limit.</summary>
    public Task<AdmissionSnapshot> GetAdmissionAsync(CancellationToken cancellationToken = default) =>
        RetryAsync(() => _grains.GetGrain<IAdmissionGrain>(0).GetSnapshotAsync(), cancellationToken);

    public static string NewJobId() => Guid.NewGuid().ToString("N")[..16];

    /// <summary>Starts a sweep (persisted once this returns), or resumes the sweep with this id and the same settings.</summary>
    /// <exception cref="ArgumentException">The request is invalid, or the id belongs to a sweep with other settings.</exception>
    public Task<SweepStatus> StartSweepAsync(string sweepId, SweepRequest request, CancellationToken cancellationToken = default) =>
        RetryAsync(() => Sweep(sweepId).StartAsync(request), cancellationToken);

    /// <exception cref="KeyNotFoundException">No such sweep.</exception>
    public Task<SweepStatus> GetSweepStatusAsync(string sweepId, CancellationToken cancellationToken = default) =>
        RetryAsync(() => Sweep(sweepId).GetStatusAsync(), cancellationToken);

    public Task<SweepRequest> GetSweepRequestAsync(string sweepId, CancellationToken cancellationToken = default) =>
        RetryAsync(() => Sweep(sweepId).GetRequestAsync(), cancellationToken);

    public Task<SweepStatus> CancelSweepAsync(string sweepId, string reason = "cancelled by the client", CancellationToken cancellationToken = default) =>
        RetryAsync(() => Sweep(sweepId).CancelAsync(reason), cancellationToken);

    /// <summary>The sweep's status each time more items finished, until it ends (the last status is terminal).</summary>
    public async IAsyncEnumerable<SweepStatus> WatchSweepAsync(string sweepId, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        int after = -1;
        while (true)
        {
            var status = await RetryAsync(() => Sweep(sweepId).WaitForProgressAsync(after, TimeSpan.FromSeconds(10), cancellationToken), cancellationToken);
            if (status.FinishedItems > after || status.IsTerminal)
            {
                after = status.FinishedItems;
                yield return status;
            }
            if (status.IsTerminal) yield break;
        }
    }

    /// <summary>Every finished item of a sweep, read in pages.</summary>
    public async Task<IReadOnlyList<SweepItemResult>> GetSweepItemsAsync(string sweepId, CancellationToken cancellationToken = default)
    {
        const int page = 200;
        var all = new List<SweepItemResult>();
        while (true)
        {
            int offset = all.Count;
            var items = await RetryAsync(() => Sweep(sweepId).GetItemsAsync(offset, page), cancellationToken);
            all.AddRange(items);
            if (items.Count < page) return all;
        }
    }

    private ISweepGrain Sweep(string sweepId)
    {
        if (string.IsNullOrWhiteSpace(sweepId)) throw new ArgumentException("the sweep id is empty");
        return _grains.GetGrain<ISweepGrain>(sweepId);
    }

    private ICoordinatorGrain Coordinator(string jobId)
    {
        if (string.IsNullOrWhiteSpace(jobId)) throw new ArgumentException("the job id is empty");
        return _references.Get<ICoordinatorGrain>(jobId);
    }

    private RetryPolicy? _retry;

    /// <summary>
    /// The silo holding the coordinator died: once it is declared dead the next call re-activates the coordinator
    /// elsewhere, which resumes the job from its record (<see cref="ClusterRetries.ClientCall"/> with <see cref="FailoverPatience"/>).
    /// </summary>
    private Task<T> RetryAsync<T>(Func<Task<T>> call, CancellationToken cancellationToken) =>
        (_retry ??= new RetryPolicy(ClusterRetries.ClientCall with { Patience = FailoverPatience })).ExecuteAsync((_, _) => call(), cancellationToken);

    public async ValueTask DisposeAsync()
    {
        if (_ownedHost is null) return;
        try { await _ownedHost.StopAsync(TimeSpan.FromSeconds(5)); }
        catch (Exception e) when (ClusterFaults.IsSiloLoss(e) || e is OperationCanceledException) { }
        _ownedHost.Dispose();
    }
}
