using MetaStone.Contracts;
using MetaStone.Grains.Durability;
using Microsoft.Extensions.Logging;

namespace MetaStone.Grains;

/// <summary>
/// Generates one candidate of a job on a replica chosen by load. If that replica's silo dies or the call times out
/// it asks another replica with the same seed, which regenerates the same trajectory. Idempotent by
/// (job, index, seed): a repeated call (a resumed coordinator) joins the generation in flight, or gets the result from
/// the grain's persisted record, written the moment the replica returned it.
/// </summary>
/// <remarks>
/// Exactly-once bound: a candidate is generated again only if its result was lost before that record was written, i.e.
/// the silo of this grain died between the replica's answer and the write (a window of one Redis round trip), or the
/// replica's silo died mid-generation (then it was never finished). So at most one extra finished generation per
/// candidate in that window when a silo is killed; the kill tests count generations and check that bound.
/// </remarks>
[Reentrant]
public sealed class CandidateGrain(
    [PersistentState("candidate", StorageNames.Jobs)] IPersistentState<CandidateRecord> record,
    RedisOutagePolicy outage, DurabilityOptions durability, ILogger<CandidateGrain> logger) : Grain, ICandidateGrain
{
    /// <summary>Replicas tried per candidate before the candidate fails.</summary>
    public const int MaxAttempts = 6;
    /// <summary>How long a candidate waits for any replica to be registered.</summary>
    public static readonly TimeSpan NoReplicaPatience = TimeSpan.FromSeconds(30);

    private readonly DurableState<CandidateRecord> _record = new(record, outage);
    private Task<CandidateResult>? _generation;
    private long _seed;
    private CancellationTokenSource _cancel = new();

    public async Task<CandidateResult> GenerateAsync(CandidateWork work, CancellationToken cancellationToken)
    {
        if (_generation is null || _seed != work.Seed || _generation.IsFaulted || _generation.IsCanceled)
        {
            if (_cancel.IsCancellationRequested) _cancel = new CancellationTokenSource();
            _seed = work.Seed;
            _generation = RunAsync(work, _cancel.Token);
        }
        // The caller's cancellation (a cancelled job) stops the generation for everyone: a job has one coordinator.
        using var stop = cancellationToken.Register(static c => ((CancellationTokenSource)c!).Cancel(), _cancel);
        return await _generation;
    }

    public Task CancelAsync()
    {
        _cancel.Cancel();
        return Task.CompletedTask;
    }

    public async Task ForgetAsync()
    {
        if (_generation is { IsCompleted: false }) return; // still wanted by someone
        try { if (_record.Exists) await _record.ClearAsync($"forgetting candidate {this.GetPrimaryKeyString()}"); }
        catch (Exception e) { logger.LogDebug("forgetting candidate {Candidate} failed: {Error}", this.GetPrimaryKeyString(), e.Message); }
        DeactivateOnIdle();
    }

    private async Task<CandidateResult> RunAsync(CandidateWork work, CancellationToken cancellationToken)
    {
        // Generated before (for a coordinator that died since, or an earlier call): take it rather than generate it again.
        if (_record.Value.Result is { } stored && stored.Seed == work.Seed) return stored;
        var registry = GrainFactory.GetGrain<IReplicaRegistryGrain>(0);
        var result = (work.Resumed ? await JoinOrphanAsync(registry, work, cancellationToken) : null)
            ?? await GenerateOnAReplicaAsync(registry, work, cancellationToken);
        if (durability.PersistCandidates) await PersistAsync(work, result);
        return result;
    }

    private async Task<CandidateResult> GenerateOnAReplicaAsync(IReplicaRegistryGrain registry, CandidateWork work, CancellationToken cancellationToken)
    {
        var tried = new List<string>();
        var waitingSince = DateTime.UtcNow;
        for (int attempt = 1; ; )
        {
            cancellationToken.ThrowIfCancellationRequested();
            string? replica;
            try { replica = await registry.PickAsync(tried); }
            catch (Exception e) when (ClusterFaults.IsSiloLoss(e)) { replica = null; } // the registry's silo died: it re-activates elsewhere
            if (replica is null)
            {
                if (DateTime.UtcNow - waitingSince > NoReplicaPatience)
                    throw new InvalidOperationException($"candidate {work.Index} of job {work.JobId}: no live model replica in the cluster for {NoReplicaPatience.TotalSeconds:0} s (tried: {string.Join(", ", tried)})");
                // Every replica tried may have been a transient failure; allow them again after a pause.
                if (tried.Count > 0) tried.Clear();
                await Task.Delay(250, cancellationToken);
                continue;
            }
            waitingSince = DateTime.UtcNow;
            try
            {
                return await GrainFactory.GetGrain<IReplicaGrain>(replica).GenerateAsync(work, cancellationToken) with { Attempts = attempt };
            }
            catch (Exception e) when (ClusterFaults.IsSiloLoss(e) && !cancellationToken.IsCancellationRequested)
            {
                logger.LogWarning("candidate {Index} of job {Job}: replica {Replica} lost ({Error}); retrying elsewhere with seed {Seed}",
                    work.Index, work.JobId, replica, e.GetType().Name, work.Seed);
                tried.Add(replica);
                if (e is Orleans.Runtime.SiloUnavailableException)
                {
                    try { await registry.ForgetAsync(replica); } catch (Exception f) when (ClusterFaults.IsSiloLoss(f)) { }
                }
                if (++attempt > MaxAttempts)
                    throw new InvalidOperationException($"candidate {work.Index} of job {work.JobId} failed on {MaxAttempts} replicas; last error: {e.Message}", e);
            }
            finally
            {
                registry.ReleaseAsync(replica).Ignore(); // one-way: the replica's outstanding count for placement
            }
        }
    }

    /// <summary>
    /// The job was resumed after a silo loss: a replica may still be generating this candidate for the caller that died.
    /// Joining that generation (at most one replica has it) costs one call per replica instead of a second generation.
    /// </summary>
    private async Task<CandidateResult?> JoinOrphanAsync(IReplicaRegistryGrain registry, CandidateWork work, CancellationToken cancellationToken)
    {
        // The registry may have died with the coordinator's silo and be refilling from heartbeats (every 0.5 s): ask it
        // twice, two heartbeats apart, so every live replica is asked.
        var replicas = new HashSet<string>();
        for (int look = 0; look < 2; look++)
        {
            if (look > 0) await Task.Delay(2 * ReplicaHeartbeat.Period, cancellationToken);
            try { replicas.UnionWith((await registry.ListAsync()).Select(r => r.Replica)); }
            catch (Exception e) when (ClusterFaults.IsSiloLoss(e)) { }
        }
        var joins = await Task.WhenAll(replicas.Select(async replica =>
        {
            try { return await GrainFactory.GetGrain<IReplicaGrain>(replica).JoinAsync(work, cancellationToken); }
            catch (Exception e) when (ClusterFaults.IsSiloLoss(e) && !cancellationToken.IsCancellationRequested) { return null; }
        }));
        return joins.FirstOrDefault(r => r is not null);
    }

    private async Task PersistAsync(CandidateWork work, CandidateResult result)
    {
        _record.Value.Result = result;
        try { await _record.WriteAsync($"storing candidate {work.Index} of job {work.JobId}"); }
        catch (ActivationReplacedException)
        {
            // A second activation of this grain (two can exist for a moment after a silo loss) stored it first. The same seed
            // gives the same trajectory, so its record holds this very candidate.
            logger.LogDebug("candidate {Index} of job {Job} was stored by another activation", work.Index, work.JobId);
            DeactivateOnIdle();
        }
        catch (Exception e)
        {
            // The coordinator still gets the candidate (and persists it in the job's result); only a resume after a
            // silo loss in the meantime would generate it again.
            logger.LogWarning("candidate {Index} of job {Job}: storing it failed ({Error})", work.Index, work.JobId, e.Message);
        }
    }
}
