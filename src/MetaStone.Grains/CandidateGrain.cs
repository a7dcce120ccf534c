using MetaStone.Contracts;
using MetaStone.Grains.Jobs;
using Microsoft.Extensions.Logging;

namespace MetaStone.Grains;

/// <summary>
/// Generates one candidate of a job on a replica chosen by load. If that replica's silo dies or the call times out
/// it asks another replica with the same seed, which regenerates the same trajectory. Idempotent by
/// (job, index, seed): a repeated call (a resumed coordinator) joins the generation in flight or gets the result.
/// </summary>
[Reentrant]
public sealed class CandidateGrain(IJobStore store, ILogger<CandidateGrain> logger) : Grain, ICandidateGrain
{
    /// <summary>Replicas tried per candidate before the candidate fails.</summary>
    public const int MaxAttempts = 6;
    /// <summary>How long a candidate waits for any replica to be registered.</summary>
    public static readonly TimeSpan NoReplicaPatience = TimeSpan.FromSeconds(30);

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

    private async Task<CandidateResult> RunAsync(CandidateWork work, CancellationToken cancellationToken)
    {
        // A replica may have finished this candidate for a caller that died since: take it rather than generate it again.
        if (await store.LoadCandidateAsync(work.JobId, work.Index) is { } stored && stored.Seed == work.Seed) return stored;
        var registry = GrainFactory.GetGrain<IReplicaRegistryGrain>(0);
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
                var result = await GrainFactory.GetGrain<IReplicaGrain>(replica).GenerateAsync(work, cancellationToken);
                return result with { Attempts = attempt };
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
}
