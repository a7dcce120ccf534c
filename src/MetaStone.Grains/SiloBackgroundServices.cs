using MetaStone.Contracts;
using MetaStone.Grains.Engines;
using Microsoft.Extensions.Logging;
using Orleans.Runtime;

namespace MetaStone.Grains;

/// <summary>
/// Reports this silo's replicas and their live load to the registry twice a second, from the moment the silo is
/// active (its engines were loaded before that) until it stops. The report carries each replica's running count of ended
/// candidate calls, which releases their placements in the registry (no release call per candidate).
/// </summary>
public sealed partial class ReplicaHeartbeat(ReplicaEngines engines, ReplicaWork work, SiloDrain drain, IGrainFactory grains, ILogger<ReplicaHeartbeat> logger)
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
                    : engines.Engines.Select(e => ReplicaGrain.LoadOf(ReplicaEngines.ReplicaKey(engines.SiloName, e.Device), e, work)).ToList();
                await registry.ReportAsync(engines.SiloName, loads);
            }
            catch (Exception e) when (!_stop.IsCancellationRequested)
            {
                LogHeartbeatFailed(logger, e.Message);
            }
            try { await Task.Delay(Period, _stop.Token); } catch (OperationCanceledException) { }
        }
    }

    // Log events 1650–1699 (numbering in LogEventIds).
    [LoggerMessage(EventId = 1651, Level = LogLevel.Debug, Message = "replica heartbeat failed (the registry re-activates elsewhere): {Error}")]
    private static partial void LogHeartbeatFailed(ILogger logger, string error);
}
