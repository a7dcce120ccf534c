using MetaStone.Contracts;
using MetaStone.Grains.Engines;
using Microsoft.Extensions.Logging;
using Orleans.Runtime;

namespace MetaStone.Grains;

/// <summary>How long a stopping silo lets its in-flight candidates finish (SIGTERM, SIGINT, <c>docker stop</c>).</summary>
public sealed record SiloDrainOptions(TimeSpan Grace)
{
    public static readonly TimeSpan DefaultGrace = TimeSpan.FromSeconds(30);
}

/// <summary>
/// Graceful stop of a silo. The first thing that runs when the silo stops (its lifecycle stage is after
/// <see cref="ServiceLifecycleStage.Active"/>, and stages stop in reverse): this silo's replicas leave the registry
/// (the heartbeat reports none), new candidate calls are refused with <see cref="ReplicaDrainingException"/> (callers
/// retry elsewhere with the same seed), and the candidates already in the engines run to the end, for at most
/// <see cref="SiloDrainOptions.Grace"/>. Then Orleans stops as usual: grains deactivate, the silo leaves membership
/// (its row goes Dead at once, no failure detection needed), and anything still running is handed over — its callers
/// see the silo gone and regenerate the candidate elsewhere with the same seed; a coordinator's job is resumed by
/// another silo's recovery sweep.
/// </summary>
public sealed partial class SiloDrain(ReplicaEngines engines, IGrainFactory grains, SiloDrainOptions options, ILogger<SiloDrain> logger)
    : ILifecycleParticipant<ISiloLifecycle>
{
    private volatile bool _draining;

    public bool Draining => _draining;

    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe(nameof(SiloDrain), ServiceLifecycleStage.Active + 1, _ => Task.CompletedTask, DrainAsync);

    private int InFlight() => engines.Engines.Sum(e => e.Load.ActiveSequences + e.Load.QueuedSequences);

    private async Task DrainAsync(CancellationToken cancellationToken)
    {
        _draining = true;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        int atStart = InFlight();
        LogStopping(logger, engines.SiloName, atStart, options.Grace.TotalSeconds);
        try { await grains.GetGrain<IReplicaRegistryGrain>(0).ReportAsync(engines.SiloName, []); }
        catch (Exception e) { LogWithdrawFailed(logger, e.Message); }
        while (InFlight() > 0 && clock.Elapsed < options.Grace && !cancellationToken.IsCancellationRequested)
        {
            try { await Task.Delay(100, cancellationToken); } catch (OperationCanceledException) { break; }
        }
        int left = InFlight();
        if (left == 0)
            LogDrained(logger, engines.SiloName, clock.Elapsed.TotalSeconds);
        else
            LogGraceOver(logger, engines.SiloName, options.Grace.TotalSeconds, left);
    }

    // Log events 1600–1649 (numbering in LogEventIds).
    [LoggerMessage(EventId = 1601, Level = LogLevel.Information, Message = "silo {Silo} stopping: taking no new candidates; {Count} in flight, grace {Grace} s")]
    private static partial void LogStopping(ILogger logger, string silo, int count, double grace);

    [LoggerMessage(EventId = 1602, Level = LogLevel.Debug, Message = "could not withdraw replicas from the registry: {Error}")]
    private static partial void LogWithdrawFailed(ILogger logger, string error);

    [LoggerMessage(EventId = 1603, Level = LogLevel.Information, Message = "silo {Silo}: in-flight candidates finished after {Seconds:0.0} s; leaving the cluster")]
    private static partial void LogDrained(ILogger logger, string silo, double seconds);

    [LoggerMessage(EventId = 1604, Level = LogLevel.Warning, Message = "silo {Silo}: grace of {Grace} s over with {Count} candidates still running: they are handed over (regenerated elsewhere with the same seeds)")]
    private static partial void LogGraceOver(ILogger logger, string silo, double grace, int count);
}
