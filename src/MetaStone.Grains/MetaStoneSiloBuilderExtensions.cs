using MetaStone.Grains.Placement;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Runtime;

namespace MetaStone.Grains;

/// <summary>Admission control: at most <paramref name="MaxRunningJobs"/> jobs run in the cluster at once (counted in the
/// job store, so the bound holds across silos that share it); further submissions get <see cref="ClusterBusyException"/>.
/// 0 = unbounded.</summary>
public sealed record AdmissionOptions(int MaxRunningJobs)
{
    public const int DefaultMaxRunningJobs = 256;
}

public static class MetaStoneSiloBuilderExtensions
{
    /// <summary>
    /// Registers replica placement and the silo background services. The caller registers the loaded
    /// <see cref="Engines.ReplicaEngines"/> and an <see cref="Jobs.IJobStore"/> as singletons.
    /// </summary>
    public static ISiloBuilder AddMetaStoneGrains(this ISiloBuilder silo, ReplicaPlacementOptions? placement = null, SiloDrainOptions? drain = null,
        AdmissionOptions? admission = null)
    {
        silo.Services.AddSingleton(admission ?? new AdmissionOptions(AdmissionOptions.DefaultMaxRunningJobs));
        silo.Services.AddSingleton(placement ?? new ReplicaPlacementOptions());
        silo.Services.AddSingleton(drain ?? new SiloDrainOptions(SiloDrainOptions.DefaultGrace));
        silo.Services.AddSingleton<SiloDrain>();
        silo.Services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>>(sp => sp.GetRequiredService<SiloDrain>());
        silo.Services.AddPlacementDirector<ReplicaPlacementStrategy, ReplicaPlacementDirector>();
        silo.Services.AddSingleton<ReplicaHeartbeat>();
        silo.Services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>>(sp => sp.GetRequiredService<ReplicaHeartbeat>());
        silo.Services.AddSingleton<JobRecoverySweep>();
        silo.Services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>>(sp => sp.GetRequiredService<JobRecoverySweep>());
        return silo;
    }
}
