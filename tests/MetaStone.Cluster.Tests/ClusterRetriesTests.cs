using MetaStone.Contracts;
using Orleans.Runtime;

namespace MetaStone.Cluster.Tests;

/// <summary>
/// The retry budgets' decisions (issue 12: one resilience policy): which failures are retried, how many times, after which
/// delays, until which patience, and what cancellation does, on the real Polly pipelines of <see cref="ClusterRetries"/>
/// with a clock that skips every delay (no cluster, no waiting).
/// </summary>
public sealed class ClusterRetriesTests
{
    /// <summary>A clock whose timers fire at once, having moved time forward by their due time; it records every delay.</summary>
    private sealed class SkippingClock : TimeProvider
    {
        private long _ticks;
        private readonly List<TimeSpan> _delays = [];

        public IReadOnlyList<TimeSpan> Delays { get { lock (_delays) return [.. _delays]; } }
        public TimeSpan Elapsed => TimeSpan.FromTicks(Interlocked.Read(ref _ticks));
        public override long TimestampFrequency => TimeSpan.TicksPerSecond;
        public override long GetTimestamp() => Interlocked.Read(ref _ticks);
        public override DateTimeOffset GetUtcNow() => new DateTimeOffset(2026, 12, 3, 0, 0, 0, TimeSpan.Zero) + Elapsed;

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            lock (_delays) _delays.Add(dueTime);
            Interlocked.Add(ref _ticks, dueTime.Ticks);
            ThreadPool.QueueUserWorkItem(_ => callback(state));
            return new Fired();
        }

        private sealed class Fired : ITimer
        {
            public bool Change(TimeSpan dueTime, TimeSpan period) => false;
            public void Dispose() { }
            public ValueTask DisposeAsync() => ValueTask.CompletedTask;
        }
    }

    private static TimeSpan Ms(int milliseconds) => TimeSpan.FromMilliseconds(milliseconds);

    /// <summary>Runs a call that always fails with <paramref name="failure"/>; returns the calls made and what was thrown.</summary>
    private static async Task<(int Calls, Exception Thrown)> AlwaysFailingAsync(RetryPolicy policy, Func<Exception> failure, CancellationToken cancellationToken = default)
    {
        int calls = 0;
        var thrown = await Assert.ThrowsAnyAsync<Exception>(() => policy.ExecuteAsync<int>((attempt, _) =>
        {
            Assert.Equal(++calls, attempt);
            throw failure();
        }, cancellationToken));
        return (calls, thrown);
    }

    [Fact]
    public async Task A_lost_candidate_grain_is_called_five_times_in_all_200_400_600_800_ms_apart_then_its_loss_is_thrown()
    {
        var clock = new SkippingClock();
        var lost = new SiloUnavailableException("silo gone");
        var (calls, thrown) = await AlwaysFailingAsync(new RetryPolicy(ClusterRetries.CandidateCall.Budget, clock), () => lost);
        Assert.Equal(5, calls);
        Assert.Same(lost, thrown);
        Assert.Equal([Ms(200), Ms(400), Ms(600), Ms(800)], clock.Delays);
    }

    [Fact]
    public async Task Only_silo_loss_is_retried_by_default_a_wrong_request_fails_at_once()
    {
        var clock = new SkippingClock();
        var (calls, thrown) = await AlwaysFailingAsync(new RetryPolicy(ClusterRetries.CandidateCall.Budget, clock), () => new ArgumentException("k out of range"));
        Assert.Equal(1, calls);
        Assert.IsType<ArgumentException>(thrown);
        Assert.Empty(clock.Delays);
        foreach (var fault in new Exception[] { new TimeoutException(), new ReplicaDrainingException("stopping"), new ActivationReplacedException("replaced") })
            Assert.True(ClusterRetries.CandidateCall.Budget.Handles(fault), fault.GetType().Name);
        Assert.False(ClusterRetries.CandidateCall.Budget.Handles(new InvalidOperationException("job failed")));
    }

    [Fact]
    public async Task A_call_that_succeeds_on_a_retry_returns_its_result_and_on_retry_sees_each_failed_attempt()
    {
        var clock = new SkippingClock();
        var seen = new List<RetryAttempt>();
        int result = await new RetryPolicy(ClusterRetries.SweepJob.Budget, clock).ExecuteAsync(
            (attempt, _) => attempt < 3 ? throw new TimeoutException($"attempt {attempt}") : Task.FromResult(attempt * 10),
            onRetry: failed => { seen.Add(failed); return ValueTask.CompletedTask; });
        Assert.Equal(30, result);
        Assert.Equal([1, 2], seen.Select(s => s.Failed));
        Assert.Equal(["attempt 1", "attempt 2"], seen.Select(s => s.Failure.Message));
        Assert.Equal([Ms(250), Ms(500)], seen.Select(s => s.Delay));
        Assert.Equal([Ms(250), Ms(500)], clock.Delays);
    }

    [Theory]
    [InlineData("candidate replica", 6)]
    [InlineData("prompt check", 6)]
    [InlineData("admission release", 5)]
    [InlineData("sweep job", 10)]
    public async Task Each_silo_loss_budget_makes_its_number_of_calls(string name, int expectedCalls)
    {
        var policy = new[] { ClusterRetries.CandidateReplica, ClusterRetries.PromptCheck, ClusterRetries.AdmissionRelease, ClusterRetries.SweepJob }
            .Single(p => p.Budget.Name == name);
        var clock = new SkippingClock();
        var (calls, _) = await AlwaysFailingAsync(new RetryPolicy(policy.Budget, clock), () => new TimeoutException());
        Assert.Equal(expectedCalls, calls);
        // Replicas are switched at once; the others back off linearly.
        var expectedDelays = policy.Budget.Delay == TimeSpan.Zero ? []
            : Enumerable.Range(1, expectedCalls - 1).Select(n => policy.Budget.Delay * n).ToList();
        Assert.Equal(expectedDelays, clock.Delays);
    }

    [Fact]
    public async Task No_replica_offered_is_asked_again_every_250_ms_for_30_s_and_nothing_else_is_retried_there()
    {
        var clock = new SkippingClock();
        var policy = new RetryPolicy(ClusterRetries.ReplicaOffer.Budget, clock);
        var (calls, thrown) = await AlwaysFailingAsync(policy, () => new NoReplicaOfferedException());
        Assert.IsType<NoReplicaOfferedException>(thrown);
        Assert.Equal(122, calls); // asked at 0, 0.25, …, 30.0 s (still within the patience), and once more at 30.25 s
        Assert.All(clock.Delays, d => Assert.Equal(Ms(250), d));
        Assert.Equal(TimeSpan.FromSeconds(30.25), clock.Elapsed);
        // A silo loss of the replica itself is the candidate-replica budget's, not this one's.
        var (lostCalls, _) = await AlwaysFailingAsync(policy, () => new SiloUnavailableException());
        Assert.Equal(1, lostCalls);
    }

    [Fact]
    public async Task A_job_looks_21_times_for_a_registered_replica_a_sweep_41_times()
    {
        var (jobLooks, _) = await AlwaysFailingAsync(new RetryPolicy(ClusterRetries.ReplicaListed.Budget, new SkippingClock()), () => new NoReplicaOfferedException());
        var sweepClock = new SkippingClock();
        var (sweepLooks, _) = await AlwaysFailingAsync(new RetryPolicy(ClusterRetries.SweepReplicaListed.Budget, sweepClock), () => new NoReplicaOfferedException());
        Assert.Equal(21, jobLooks);
        Assert.Equal(41, sweepLooks);
        Assert.Equal(TimeSpan.FromSeconds(10), sweepClock.Elapsed);
    }

    [Fact]
    public async Task A_sweep_item_is_tried_as_three_jobs_when_its_job_failed_or_was_cancelled_but_not_for_a_silo_loss()
    {
        var (failedCalls, _) = await AlwaysFailingAsync(new RetryPolicy(ClusterRetries.SweepItem.Budget, new SkippingClock()), () => new InvalidOperationException("job failed"));
        var (cancelledCalls, _) = await AlwaysFailingAsync(new RetryPolicy(ClusterRetries.SweepItem.Budget, new SkippingClock()), () => new OperationCanceledException("job cancelled"));
        var (lostCalls, _) = await AlwaysFailingAsync(new RetryPolicy(ClusterRetries.SweepItem.Budget, new SkippingClock()), () => new TimeoutException());
        Assert.Equal((3, 3, 1), (failedCalls, cancelledCalls, lostCalls));
    }

    [Fact]
    public async Task The_client_retries_with_delays_growing_by_200_ms_up_to_2_s_until_its_patience_runs_out()
    {
        var clock = new SkippingClock();
        var policy = new RetryPolicy(ClusterRetries.ClientCall with { Patience = TimeSpan.FromSeconds(10) }, clock);
        var (calls, _) = await AlwaysFailingAsync(policy, () => new SiloUnavailableException());
        // Failures at 0, 0.2, 0.6, 1.2, 2.0, 3.0, 4.2, 5.6, 7.2, 9.0 s are retried; the one at 11.0 s is past the patience.
        Assert.Equal(11, calls);
        Assert.Equal([.. Enumerable.Range(1, 9).Select(n => Ms(200 * n)), Ms(2000)], clock.Delays);
        Assert.Equal(TimeSpan.FromSeconds(2), ClusterRetries.ClientCall.MaxDelay);
        Assert.Equal(TimeSpan.FromMinutes(2), ClusterRetries.ClientCall.Patience);
    }

    [Fact]
    public async Task A_cancelled_caller_gets_the_attempts_own_failure_and_no_retry()
    {
        using var cancel = new CancellationTokenSource();
        var clock = new SkippingClock();
        var lost = new SiloUnavailableException("silo gone");
        var (calls, thrown) = await AlwaysFailingAsync(new RetryPolicy(ClusterRetries.CandidateCall.Budget, clock), () =>
        {
            cancel.Cancel(); // the job is cancelled while the call fails
            return lost;
        }, cancel.Token);
        Assert.Equal(1, calls);
        Assert.Same(lost, thrown);
        Assert.Empty(clock.Delays);
    }

    [Fact]
    public async Task A_caller_cancelled_before_the_delay_ends_gets_operation_cancelled()
    {
        using var cancel = new CancellationTokenSource();
        var policy = new RetryPolicy(ClusterRetries.CandidateCall.Budget, new SkippingClock());
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => policy.ExecuteAsync<int>(
            (_, _) => throw new SiloUnavailableException(), cancel.Token,
            onRetry: _ => { cancel.Cancel(); return ValueTask.CompletedTask; })); // cancelled between the failure and the delay
    }

    [Fact]
    public async Task Every_retry_runs_on_the_callers_scheduler_as_a_grain_needs()
    {
        // A grain's turn runs on its activation's task scheduler; a retry after a back-off delay must come back to it.
        var scheduler = new ConcurrentExclusiveSchedulerPair().ExclusiveScheduler;
        var policy = new RetryPolicy(ClusterRetries.CandidateCall.Budget, new SkippingClock());
        var schedulers = new List<TaskScheduler>();
        int result = await Task.Factory.StartNew(() => policy.ExecuteAsync(async (attempt, _) =>
        {
            schedulers.Add(TaskScheduler.Current);
            await Task.Yield();
            schedulers.Add(TaskScheduler.Current);
            return attempt < 4 ? throw new TimeoutException() : attempt;
        }), CancellationToken.None, TaskCreationOptions.None, scheduler).Unwrap().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(4, result);
        Assert.Equal(8, schedulers.Count);
        Assert.All(schedulers, s => Assert.Same(scheduler, s));
    }
}
