using MetaStone.Contracts;
using MetaStone.Grains.Durability;
using MetaStone.Grains.Placement;
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
public sealed partial class CandidateGrain(
    IGrainContext grainContext, IPersistentStateFactory states,
    RedisOutagePolicy outage, DurabilityOptions durability, GrainReferences grains, ILogger<CandidateGrain> logger) : Grain, ICandidateGrain
{
    /// <summary>
    /// The idempotency record, only where it can be used (a cluster): created here rather than injected with
    /// <c>[PersistentState]</c> so the one-process mode does not read an empty record on each of a job's k activations.
    /// </summary>
    private readonly DurableState<CandidateRecord>? _record = durability.PersistCandidates
        ? new(states.Create<CandidateRecord>(grainContext, new PersistentStateAttribute("candidate", StorageNames.Jobs)), outage)
        : null;
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
        try { if (_record is { Exists: true }) await _record.ClearAsync($"forgetting candidate {this.GetPrimaryKeyString()}"); }
        catch (Exception e) { LogForgettingFailed(logger, this.GetPrimaryKeyString(), e.Message); }
        DeactivateOnIdle();
    }

    private async Task<CandidateResult> RunAsync(CandidateWork work, CancellationToken cancellationToken)
    {
        // Generated before (for a coordinator that died since, or an earlier call): take it rather than generate it again.
        if (_record?.Value.Result is { } stored && stored.Seed == work.Seed) return stored;
        var registry = grains.Get<IReplicaRegistryGrain>(0);
        var result = (work.CallerLost ? await JoinOrphanAsync(registry, work, cancellationToken) : null)
            ?? await GenerateOnAReplicaAsync(registry, work, cancellationToken);
        if (_record is not null) await PersistAsync(_record, work, result);
        return result;
    }

    private async Task<CandidateResult> GenerateOnAReplicaAsync(IReplicaRegistryGrain registry, CandidateWork work, CancellationToken cancellationToken)
    {
        var attempts = new CandidateAttempts(work.JobId, work.Index);
        return await ClusterRetries.CandidateReplica.ExecuteAsync(async (_, token) =>
        {
            string replica = await PickReplicaAsync(registry, attempts, token);
            try
            {
                return await grains.Get<IReplicaGrain>(replica).GenerateAsync(work, token) with { Attempts = attempts.Attempt };
            }
            catch (Exception e) when (ClusterFaults.IsSiloLoss(e) && !token.IsCancellationRequested)
            {
                LogReplicaLost(logger, work.Index, work.JobId, replica, e.GetType().Name, work.Seed);
                if (e is Orleans.Runtime.SiloUnavailableException)
                {
                    try { await registry.ForgetAsync(replica); } catch (Exception f) when (ClusterFaults.IsSiloLoss(f)) { }
                }
                attempts.ReplicaLost(replica, e); // the last replica's loss fails the candidate: not a silo loss, so not retried
                throw;
            }
        }, cancellationToken);
    }

    /// <summary>A replica from the registry, avoiding those that failed this candidate, waiting while it has none to offer.</summary>
    private static async Task<string> PickReplicaAsync(IReplicaRegistryGrain registry, CandidateAttempts attempts, CancellationToken cancellationToken)
    {
        try
        {
            return await ClusterRetries.ReplicaOffer.ExecuteAsync(async (_, token) =>
            {
                token.ThrowIfCancellationRequested();
                string? replica;
                try { replica = await registry.PickAsync(attempts.Excluded); }
                catch (Exception e) when (ClusterFaults.IsSiloLoss(e)) { replica = null; } // the registry's silo died: it re-activates elsewhere
                return replica ?? throw new NoReplicaOfferedException();
            }, cancellationToken, onRetry: _ =>
            {
                attempts.NoReplicaOffered();
                return ValueTask.CompletedTask;
            });
        }
        catch (NoReplicaOfferedException)
        {
            throw attempts.NoReplicaFailure(ClusterRetries.ReplicaOffer.Budget.Patience!.Value);
        }
    }

    /// <summary>
    /// A caller of this candidate died (a resumed job, or a reissue after this grain's silo died): a replica may still be
    /// generating it, or have just finished it, for that caller.
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
            try { return await grains.Get<IReplicaGrain>(replica).JoinAsync(work, cancellationToken); }
            catch (Exception e) when (ClusterFaults.IsSiloLoss(e) && !cancellationToken.IsCancellationRequested) { return null; }
        }));
        return joins.FirstOrDefault(r => r is not null);
    }

    private async Task PersistAsync(DurableState<CandidateRecord> record, CandidateWork work, CandidateResult result)
    {
        record.Value.Result = result;
        try { await record.WriteAsync($"storing candidate {work.Index} of job {work.JobId}"); }
        catch (ActivationReplacedException)
        {
            // A second activation of this grain (two can exist for a moment after a silo loss) stored it first. The same seed
            // gives the same trajectory, so its record holds this very candidate.
            LogStoredByAnotherActivation(logger, work.Index, work.JobId);
            DeactivateOnIdle();
        }
        catch (Exception e)
        {
            // The coordinator still gets the candidate (and persists it in the job's result); only a resume after a
            // silo loss in the meantime would generate it again.
            LogStoringFailed(logger, work.Index, work.JobId, e.Message);
        }
    }

    // Log events 1200–1299 (numbering in LogEventIds).
    [LoggerMessage(EventId = 1201, Level = LogLevel.Debug, Message = "forgetting candidate {Candidate} failed: {Error}")]
    private static partial void LogForgettingFailed(ILogger logger, string candidate, string error);

    [LoggerMessage(EventId = 1202, Level = LogLevel.Warning, Message = "candidate {Index} of job {Job}: replica {Replica} lost ({Error}); retrying elsewhere with seed {Seed}")]
    private static partial void LogReplicaLost(ILogger logger, int index, string job, string replica, string error, long seed);

    [LoggerMessage(EventId = 1203, Level = LogLevel.Debug, Message = "candidate {Index} of job {Job} was stored by another activation")]
    private static partial void LogStoredByAnotherActivation(ILogger logger, int index, string job);

    [LoggerMessage(EventId = 1204, Level = LogLevel.Warning, Message = "candidate {Index} of job {Job}: storing it failed ({Error})")]
    private static partial void LogStoringFailed(ILogger logger, int index, string job, string error);
}
