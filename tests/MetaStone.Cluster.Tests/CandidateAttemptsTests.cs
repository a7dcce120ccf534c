using MetaStone.Grains.Placement;

namespace MetaStone.Cluster.Tests;

/// <summary>A candidate's retry decisions across replicas, without a cluster (issue 12: candidate retry had only end-to-end tests).</summary>
public sealed class CandidateAttemptsTests
{
    private sealed class ManualClock : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = new(2026, 12, 3, 0, 0, 0, TimeSpan.Zero);
        public override DateTimeOffset GetUtcNow() => Now;
    }

    private static readonly Exception SiloGone = new TimeoutException("silo gone");

    [Fact]
    public void The_first_attempt_excludes_nothing_and_is_number_one()
    {
        var attempts = new CandidateAttempts("job-1", 3, new ManualClock());
        Assert.Empty(attempts.Excluded);
        Assert.Equal(1, attempts.Attempt);
    }

    [Fact]
    public void A_lost_replica_is_excluded_from_the_next_pick_and_counts_an_attempt()
    {
        var attempts = new CandidateAttempts("job-1", 3, new ManualClock());
        attempts.ReplicaPicked();
        attempts.ReplicaLost("a/cpu", SiloGone);
        attempts.ReplicaPicked();
        attempts.ReplicaLost("b/cpu", SiloGone);
        Assert.Equal(["a/cpu", "b/cpu"], attempts.Excluded);
        Assert.Equal(3, attempts.Attempt);
    }

    [Fact]
    public void The_candidate_fails_when_the_last_attempt_is_lost_with_the_last_error_as_its_cause()
    {
        var attempts = new CandidateAttempts("job-1", 3, new ManualClock());
        for (int lost = 1; lost < CandidateAttempts.MaxAttempts; lost++)
        {
            attempts.ReplicaPicked();
            attempts.ReplicaLost($"r{lost}/cpu", SiloGone);
        }
        Assert.Equal(CandidateAttempts.MaxAttempts, attempts.Attempt);
        var last = new TimeoutException("the sixth silo died too");
        var failure = Assert.Throws<InvalidOperationException>(() => attempts.ReplicaLost("r6/cpu", last));
        Assert.Equal($"candidate 3 of job job-1 failed on {CandidateAttempts.MaxAttempts} replicas; last error: the sixth silo died too", failure.Message);
        Assert.Same(last, failure.InnerException);
    }

    [Fact]
    public void When_the_registry_runs_out_of_choices_the_excluded_replicas_are_allowed_again_after_a_pause()
    {
        var attempts = new CandidateAttempts("job-1", 3, new ManualClock());
        attempts.ReplicaPicked();
        attempts.ReplicaLost("a/cpu", SiloGone);
        Assert.Equal(CandidateAttempts.NoReplicaPause, attempts.NoReplicaAvailable());
        Assert.Empty(attempts.Excluded);
        // Allowing replicas again does not give attempts back.
        Assert.Equal(2, attempts.Attempt);
    }

    [Fact]
    public void Without_any_replica_the_candidate_waits_its_patience_then_fails()
    {
        var clock = new ManualClock();
        var attempts = new CandidateAttempts("job-7", 0, clock);
        clock.Now += CandidateAttempts.NoReplicaPatience; // exactly the patience: still waiting
        Assert.Equal(CandidateAttempts.NoReplicaPause, attempts.NoReplicaAvailable());
        clock.Now += TimeSpan.FromMilliseconds(1);
        var failure = Assert.Throws<InvalidOperationException>(() => attempts.NoReplicaAvailable());
        Assert.Equal("candidate 0 of job job-7: no live model replica in the cluster for 30 s (tried: )", failure.Message);
    }

    [Fact]
    public void A_picked_replica_restarts_the_patience()
    {
        var clock = new ManualClock();
        var attempts = new CandidateAttempts("job-1", 3, clock);
        clock.Now += CandidateAttempts.NoReplicaPatience - TimeSpan.FromSeconds(1);
        attempts.ReplicaPicked();
        attempts.ReplicaLost("a/cpu", SiloGone);
        clock.Now += CandidateAttempts.NoReplicaPatience - TimeSpan.FromSeconds(1);
        Assert.Equal(CandidateAttempts.NoReplicaPause, attempts.NoReplicaAvailable());
        clock.Now += TimeSpan.FromSeconds(2);
        Assert.Throws<InvalidOperationException>(() => attempts.NoReplicaAvailable());
    }

    [Fact]
    public void The_patience_counts_from_the_start_even_if_the_registry_never_answered()
    {
        var clock = new ManualClock();
        var attempts = new CandidateAttempts("job-1", 3, clock);
        for (int ask = 0; ask < 10; ask++)
        {
            clock.Now += TimeSpan.FromSeconds(3);
            Assert.Equal(CandidateAttempts.NoReplicaPause, attempts.NoReplicaAvailable());
        }
        clock.Now += TimeSpan.FromSeconds(1);
        Assert.Throws<InvalidOperationException>(() => attempts.NoReplicaAvailable());
    }
}
