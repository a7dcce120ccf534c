using MetaStone.Contracts;
using MetaStone.Grains.Engines;
using MetaStone.Grains.Jobs;
using MetaStone.Grains.Sweeps;
using Microsoft.Extensions.Logging;
using Orleans.Runtime;

namespace MetaStone.Grains;

/// <summary>
/// Reports this silo's replicas and their live load to the registry twice a second, from the moment the silo is
/// active (its engines were loaded before that) until it stops.
/// </summary>
public sealed class ReplicaHeartbeat(ReplicaEngines engines, SiloDrain drain, IGrainFactory grains, ILogger<ReplicaHeartbeat> logger)
    : ILifecycleParticipant<ISiloLifecycle>
{
    public static readonly TimeSpan Period = TimeSpan.FromMilliseconds(500);
    private readonly CancellationTokenSource _stop = new();
    private Task? _loop;

    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe(nameof(ReplicaHeartbeat), ServiceLifecycleStage.Active,
            _ => { _loop = Task.Run(LoopAsync); return Task.CompletedTask; },
            async _ => { _stop.Cancel(); if (_loop is not null) await _loop; });

    private async Task LoopAsync()
    {
        var registry = grains.GetGrain<IReplicaRegistryGrain>(0);
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                // A draining (stopping) silo reports no replicas, which withdraws them from placement.
                var loads = drain.Draining ? []
                    : engines.Engines.Select(e => ReplicaGrain.LoadOf(ReplicaEngines.ReplicaKey(engines.SiloName, e.Device), e)).ToList();
                await registry.ReportAsync(engines.SiloName, loads);
            }
            catch (Exception e) when (!_stop.IsCancellationRequested)
            {
                logger.LogDebug("replica heartbeat failed (the registry re-activates elsewhere): {Error}", e.Message);
            }
            try { await Task.Delay(Period, _stop.Token); } catch (OperationCanceledException) { }
        }
    }
}

/// <summary>
/// Makes sure no accepted job or sweep is lost: every two seconds, each running job (and sweep) in the store whose
/// lease has lapsed (its silo died) gets its grain poked, which activates on a live silo and resumes it.
/// </summary>
public sealed class JobRecoverySweep(IJobStore store, ISweepStore sweeps, IGrainFactory grains, ILogger<JobRecoverySweep> logger)
    : ILifecycleParticipant<ISiloLifecycle>
{
    public static readonly TimeSpan Period = TimeSpan.FromSeconds(2);
    private readonly CancellationTokenSource _stop = new();
    private Task? _loop;

    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe(nameof(JobRecoverySweep), ServiceLifecycleStage.Active,
            _ => { _loop = Task.Run(LoopAsync); return Task.CompletedTask; },
            async _ => { _stop.Cancel(); if (_loop is not null) await _loop; });

    /// <summary>Pokes the grain of every running record whose lease lapsed; a failed poke is retried on the next pass.</summary>
    private async Task ResumeOrphansAsync(string kind, IReadOnlyList<string> running, Func<string, Task<bool>> hasLease, Func<string, Task> resume)
    {
        foreach (var id in running)
        {
            if (await hasLease(id)) continue;
            logger.LogWarning("{Kind} {Id} has no live grain: resuming it", kind, id);
            _ = resume(id).ContinueWith(
                t => logger.LogDebug("resume of {Kind} {Id} failed (retried next pass): {Error}", kind, id, t.Exception?.GetBaseException().Message),
                TaskContinuationOptions.OnlyOnFaulted);
        }
    }

    private async Task LoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            try { await Task.Delay(Period, _stop.Token); } catch (OperationCanceledException) { break; }
            try
            {
                await ResumeOrphansAsync("job", await store.RunningJobsAsync(), store.HasLeaseAsync, id => grains.GetGrain<ICoordinatorGrain>(id).ResumeAsync());
                await ResumeOrphansAsync("sweep", await sweeps.RunningSweepsAsync(), sweeps.HasLeaseAsync, id => grains.GetGrain<ISweepGrain>(id).ResumeAsync());
            }
            catch (Exception e) when (!_stop.IsCancellationRequested)
            {
                logger.LogWarning("job recovery sweep failed: {Error}", e.Message);
            }
        }
    }
}
