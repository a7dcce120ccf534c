using Orleans.Placement;
using Orleans.Runtime;
using Orleans.Runtime.Placement;
using MetaStone.Grains.Engines;

namespace MetaStone.Grains.Placement;

/// <summary>Places a replica grain on the silo named in its key ("{silo}/{device}"), where that device's engine lives.</summary>
[GenerateSerializer, Immutable, SuppressReferenceTracking, Alias("metastone.ReplicaPlacementStrategy")]
public sealed class ReplicaPlacementStrategy : PlacementStrategy;

[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class ReplicaPlacementAttribute() : PlacementAttribute(new ReplicaPlacementStrategy());

/// <summary>
/// Silo names, not metadata, pick the silo: names are in the membership snapshot from the moment a silo joins,
/// while metadata arrives later (a start-up race). A replica whose silo is gone gets a clear error instead of
/// landing on a silo that has no such engine; the caller then picks another replica.
/// </summary>
public sealed class ReplicaPlacementDirector(IClusterMembershipService membership) : IPlacementDirector
{
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        string key = target.GrainIdentity.Key.ToString() ?? "";
        var (silo, _) = ReplicaEngines.ParseReplicaKey(key);
        var members = membership.CurrentSnapshot.Members;
        foreach (var address in context.GetCompatibleSilos(target))
        {
            if (members.TryGetValue(address, out var member) && member.Name == silo && member.Status == SiloStatus.Active)
                return Task.FromResult(address);
        }
        throw new SiloUnavailableException($"replica '{key}' cannot be placed: no active silo is named '{silo}'");
    }
}
