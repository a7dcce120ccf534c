using MetaStone.Grains.Durability;
using MetaStone.Grains.Placement;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Orleans.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Runtime;

namespace MetaStone.Grains;

/// <summary>Admission control: at most <paramref name="MaxRunningJobs"/> jobs run in the cluster at once (counted by the
/// persisted admission grain, so the bound holds across silos that share it); further submissions get <see cref="ClusterBusyException"/>.
/// 0 = unbounded.</summary>
public sealed record AdmissionOptions(int MaxRunningJobs)
{
    public const int DefaultMaxRunningJobs = 256;
}

public static class MetaStoneSiloBuilderExtensions
{
    /// <summary>
    /// Registers replica placement, admission, the recovery reminders' period and the silo background services. The caller
    /// registers the loaded <see cref="Engines.ReplicaEngines"/>, the grain storages named in <see cref="StorageNames"/>
    /// and a reminder service.
    /// </summary>
    public static ISiloBuilder AddMetaStoneGrains(this ISiloBuilder silo, ReplicaPlacementOptions? placement = null, SiloDrainOptions? drain = null,
        AdmissionOptions? admission = null, DurabilityOptions? durability = null)
    {
        silo.Services.AddSingleton(durability ?? DurabilityOptions.Cluster);
        silo.Services.AddSingleton(admission ?? new AdmissionOptions(AdmissionOptions.DefaultMaxRunningJobs));
        silo.Services.AddSingleton(placement ?? new ReplicaPlacementOptions());
        silo.Services.AddSingleton(drain ?? new SiloDrainOptions(SiloDrainOptions.DefaultGrace));
        silo.Services.AddSingleton<SiloDrain>();
        silo.Services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>>(sp => sp.GetRequiredService<SiloDrain>());
        silo.Services.AddPlacementDirector<ReplicaPlacementStrategy, ReplicaPlacementDirector>();
        silo.Services.AddSingleton<Engines.ReplicaWork>();
        silo.Services.AddSingleton<MetaStone.Contracts.GrainReferences>();
        silo.Services.AddSingleton<ReplicaHeartbeat>();
        silo.Services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>>(sp => sp.GetRequiredService<ReplicaHeartbeat>());
        // Runs of a dead silo resume from their persisted records when their recovery reminder next ticks (every 5 s,
        // below Orleans' default minimum of one minute, which would leave a job of a dead silo idle for a minute).
        silo.Configure<ReminderOptions>(o => o.MinimumReminderPeriod = RecoverableRunGrain.RecoveryPeriod);
        // Without Redis (the embedded mode and tests) state writes are never retried.
        silo.Services.TryAddSingleton(new RedisOutagePolicy(TimeSpan.Zero));
        return silo;
    }
}
