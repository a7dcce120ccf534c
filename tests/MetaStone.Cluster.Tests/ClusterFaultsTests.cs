using MetaStone.Contracts;
using Orleans.Runtime;

namespace MetaStone.Cluster.Tests;

/// <summary>The one fault classifier (issue 12): what grains and client both retry elsewhere, and what they report at once.</summary>
public sealed class ClusterFaultsTests
{
    [Fact]
    public void A_lost_silo_a_timeout_a_rejected_message_and_a_draining_replica_are_retried()
    {
        Assert.True(ClusterFaults.IsSiloLoss(new SiloUnavailableException("gone")));
        Assert.True(ClusterFaults.IsSiloLoss(new TimeoutException()));
        Assert.True(ClusterFaults.IsSiloLoss(new ReplicaDrainingException("stopping")));
        Assert.True(ClusterFaults.IsSiloLoss(new ActivationReplacedException("replaced")));
        Assert.True(ClusterFaults.IsSiloLoss(new AggregateException(new TimeoutException(), new SiloUnavailableException())));
    }

    [Fact]
    public void A_wrong_request_or_a_mixed_failure_is_not_retried()
    {
        Assert.False(ClusterFaults.IsSiloLoss(new ArgumentException("k out of range")));
        Assert.False(ClusterFaults.IsSiloLoss(new KeyNotFoundException("unknown job")));
        Assert.False(ClusterFaults.IsSiloLoss(new InvalidOperationException("job failed")));
        Assert.False(ClusterFaults.IsSiloLoss(new AggregateException(new TimeoutException(), new ArgumentException("bad"))));
        Assert.False(ClusterFaults.IsSiloLoss(new AggregateException()));
    }
}
