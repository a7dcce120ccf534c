using MetaStone.Contracts;
using MetaStone.Grains.Placement;

namespace MetaStone.Cluster.Tests;

/// <summary>A candidate's retry decisions across replicas, without a cluster (issue 12: candidate retry had only end-to-end tests).</summary>
public sealed class CandidateAttemptsTests
{
    private static readonly Exception SiloGone = new TimeoutException("silo gone");

    [Fact]
    public void The_first_attempt_excludes_nothing_and_is_number_one()
    {
        var attempts = new CandidateAttempts("job-1", 3);
        Assert.Empty(attempts.Excluded);
        Assert.Equal(1, attempts.Attempt);
    }

    [Fact]
    public void A_lost_replica_is_excluded_from_the_next_pick_and_counts_an_attempt()
    {
        var attempts = new CandidateAttempts("job-1", 3);
        attempts.ReplicaLost("a/cpu", SiloGone);
        attempts.ReplicaLost("b/cpu", SiloGone);
        Assert.Equal(["a/cpu", "b/cpu"], attempts.Excluded);
        Assert.Equal(3, attempts.Attempt);
    }

    [Fact]
    public void The_candidate_fails_when_the_last_attempt_is_lost_with_the_last_error_as_its_cause()
    {
        var attempts = new CandidateAttempts("job-1", 3);
        for (int lost = 1; lost < CandidateAttempts.MaxAttempts; lost++)
        {
            attempts.ReplicaLost($"r{lost}/cpu", SiloGone);
        }
        Assert.Equal(CandidateAttempts.MaxAttempts, attempts.Attempt);
        var last = new TimeoutException("the sixth silo died too");
        var failure = Assert.Throws<InvalidOperationException>(() => attempts.ReplicaLost("r6/cpu", last));
        Assert.Equal($"candidate 3 of job job-1 failed on {CandidateAttempts.MaxAttempts} replicas; last error: the sixth silo died too", failure.Message);
        Assert.Same(last, failure.InnerException);
    }

    [Fact]
    public void When_the_registry_runs_out_of_choices_the_excluded_replicas_are_allowed_again()
    {
        var attempts = new CandidateAttempts("job-1", 3);
        attempts.ReplicaLost("a/cpu", SiloGone);
        attempts.NoReplicaOffered();
        Assert.Empty(attempts.Excluded);
        // Allowing replicas again does not give attempts back.
        Assert.Equal(2, attempts.Attempt);
    }

    [Fact]
    public void A_candidate_without_any_replica_fails_naming_the_patience()
    {
        var attempts = new CandidateAttempts("job-7", 0);
        Assert.Equal("candidate 0 of job job-7: no live model replica in the cluster for 30 s (tried: )",
            attempts.NoReplicaFailure(ClusterRetries.ReplicaOffer.Budget.Patience!.Value).Message);
    }
}
