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
public sealed class ReplicaHeartbeat(ReplicaEngines engines, IGrainFactory grains, ILogger<ReplicaHeartbeat> logger)
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
                var loads = engines.Engines.Select(e => ReplicaGrain.LoadOf(ReplicaEngines.ReplicaKey(engines.SiloName, e.Device), e)).ToList();
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

    private async Task LoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            try { await Task.Delay(Period, _stop.Token); } catch (OperationCanceledException) { break; }
            try
            {
                foreach (var jobId in await store.RunningJobsAsync())
                {
                    if (await store.HasLeaseAsync(jobId)) continue;
                    logger.LogWarning("job {Job} has no live coordinator: resuming it", jobId);
                    _ = grains.GetGrain<ICoordinatorGrain>(jobId).ResumeAsync().ContinueWith(
                        t => logger.LogDebug("resume of job {Job} failed (retried next sweep): {Error}", jobId, t.Exception?.GetBaseException().Message),
                        TaskContinuationOptions.OnlyOnFaulted);
                }
                foreach (var sweepId in await sweeps.RunningSweepsAsync())
                {
                    if (await sweeps.HasLeaseAsync(sweepId)) continue;
                    logger.LogWarning("sweep {Sweep} has no live grain: resuming it", sweepId);
                    _ = grains.GetGrain<ISweepGrain>(sweepId).ResumeAsync().ContinueWith(
                        t => logger.LogDebug("resume of sweep {Sweep} failed (retried next sweep): {Error}", sweepId, t.Exception?.GetBaseException().Message),
                        TaskContinuationOptions.OnlyOnFaulted);
                }
            }
            catch (Exception e) when (!_stop.IsCancellationRequested)
            {
                logger.LogWarning("job recovery sweep failed: {Error}", e.Message);
            }
        }
    }
}
