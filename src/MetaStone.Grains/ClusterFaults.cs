using Orleans.Runtime;

namespace MetaStone.Grains;

/// <summary>Which failures mean "the silo on the other end is gone, unreachable or stopping", i.e. the call may be reissued elsewhere.</summary>
public static class ClusterFaults
{
    public static bool IsSiloLoss(Exception e) => e switch
    {
        SiloUnavailableException or TimeoutException or OrleansMessageRejectionException or ReplicaDrainingException => true,
        AggregateException a => a.InnerExceptions.All(IsSiloLoss),
        Orleans.Serialization.UnavailableExceptionFallbackException f => f.ExceptionType?.Contains(nameof(ReplicaDrainingException), StringComparison.Ordinal) == true,
        _ => false,
    };
}
