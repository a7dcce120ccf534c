using Orleans.Runtime;

namespace MetaStone.Grains;

/// <summary>Which failures mean "the silo on the other end is gone or unreachable", i.e. the call may be reissued elsewhere.</summary>
public static class ClusterFaults
{
    public static bool IsSiloLoss(Exception e) => e switch
    {
        SiloUnavailableException or TimeoutException or OrleansMessageRejectionException => true,
        AggregateException a => a.InnerExceptions.All(IsSiloLoss),
        _ => false,
    };
}
