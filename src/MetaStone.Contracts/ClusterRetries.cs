using System.Runtime.ExceptionServices;
using Polly;
using Polly.Retry;

namespace MetaStone.Contracts;

/// <summary>
/// How often and how patiently one kind of call is retried: attempts in all (the first call included), the delay before
/// each retry (constant, or linear: <c>Delay × n</c> before the n-th retry, capped at <paramref name="MaxDelay"/>), an
/// optional patience after which no retry starts, and which failures are retried (by default
/// <see cref="ClusterFaults.IsSiloLoss"/>: the silo on the other end is gone).
/// </summary>
public sealed record RetryBudget(
    string Name, int MaxAttempts, TimeSpan Delay, DelayBackoffType Backoff = DelayBackoffType.Linear,
    TimeSpan? MaxDelay = null, TimeSpan? Patience = null, Func<Exception, bool>? Retries = null)
{
    /// <summary>Whether <paramref name="failure"/> is one this budget retries.</summary>
    public bool Handles(Exception failure) => (Retries ?? ClusterFaults.IsSiloLoss)(failure);
}

/// <summary>One retry of a <see cref="RetryPolicy"/>: the failed attempt (1 = the first call), its failure and the delay before the next.</summary>
public readonly record struct RetryAttempt(int Failed, Exception Failure, TimeSpan Delay);

/// <summary>
/// The budgets of every hand-off that is retried in the cluster and its client, in one place, each with its one
/// <see cref="RetryPolicy"/> (a Polly 8 retry pipeline). Before, each call site had its own loop and counters.
/// </summary>
public static class ClusterRetries
{
    /// <summary>Coordinator → candidate grain: reissued (same seed, the grain re-activates on a survivor) 4 times, 200, 400, 600, 800 ms apart;
    /// the candidate grain retries replicas itself.</summary>
    public static readonly RetryPolicy CandidateCall = new(new("candidate call", 5, TimeSpan.FromMilliseconds(200)));

    /// <summary>Candidate grain → replica: another replica with the same seed at once, 6 replicas in all (the exclusions and the
    /// failure message are <c>CandidateAttempts</c>').</summary>
    public static readonly RetryPolicy CandidateReplica = new(new("candidate replica", 6, TimeSpan.Zero, DelayBackoffType.Constant));

    /// <summary>Candidate grain → registry: no replica to offer (none live, all excluded, or the registry's silo died); asked
    /// again every 250 ms for 30 s.</summary>
    public static readonly RetryPolicy ReplicaOffer = new(new("replica offer", int.MaxValue, TimeSpan.FromMilliseconds(250), DelayBackoffType.Constant,
        Patience: TimeSpan.FromSeconds(30), Retries: static e => e is NoReplicaOfferedException));

    /// <summary>Any replica for a job's checks: 20 more looks 250 ms apart (5 s) while no replica is registered (a starting cluster).</summary>
    public static readonly RetryPolicy ReplicaListed = new(new("replica listed", 21, TimeSpan.FromMilliseconds(250), DelayBackoffType.Constant,
        Retries: static e => e is NoReplicaOfferedException));

    /// <summary>A sweep's replica: twice a job's patience (10 s), as a sweep is often started right after its silos.</summary>
    public static readonly RetryPolicy SweepReplicaListed = new(ReplicaListed.Budget with { Name = "sweep replica listed", MaxAttempts = 41 });

    /// <summary>Coordinator → replica, the prompt check: another replica at once (the lost one is forgotten), 6 in all.</summary>
    public static readonly RetryPolicy PromptCheck = new(new("prompt check", 6, TimeSpan.Zero, DelayBackoffType.Constant));

    /// <summary>Coordinator → admission, releasing an ended job: 5 calls 200, 400, 600, 800 ms apart, then admission reconciles it itself.</summary>
    public static readonly RetryPolicy AdmissionRelease = new(new("admission release", 5, TimeSpan.FromMilliseconds(200)));

    /// <summary>Sweep → an item's job (submit, then await): 10 calls 250 ms × n apart while the job's coordinator silo dies and is replaced.</summary>
    public static readonly RetryPolicy SweepJob = new(new("sweep job", 10, TimeSpan.FromMilliseconds(250)));

    /// <summary>Sweep → an item whose job failed or was cancelled: the item again under a new job id, 3 jobs in all, at once.</summary>
    public static readonly RetryPolicy SweepItem = new(new("sweep item", 3, TimeSpan.Zero, DelayBackoffType.Constant,
        Retries: static e => e is InvalidOperationException or OperationCanceledException));

    /// <summary>Client → any grain: retried 200 ms × n apart (at most 2 s) until the client's failover patience (2 min by default) runs out.</summary>
    public static readonly RetryBudget ClientCall = new("client call", int.MaxValue, TimeSpan.FromMilliseconds(200),
        MaxDelay: TimeSpan.FromSeconds(2), Patience: TimeSpan.FromMinutes(2));
}

/// <summary>
/// A registry, the registry's silo, or every replica asked had no replica to offer. Retried by <see cref="ClusterRetries.ReplicaOffer"/>
/// and <see cref="ClusterRetries.ReplicaListed"/>; never crosses a grain boundary.
/// </summary>
public sealed class NoReplicaOfferedException() : Exception("no live model replica was offered");

/// <summary>
/// A <see cref="RetryBudget"/> as a Polly 8 retry pipeline, built once. Calls run with <c>continueOnCapturedContext</c>, so in
/// a grain every retry and every continuation stays on the grain's scheduler (Orleans refuses grain work from a thread-pool
/// continuation, which is where a retry after a back-off delay would otherwise run; see <c>RedisOutagePolicy</c>).
/// Cancellation: a cancelled token ends the retries with the attempt's own failure, and cancels a pending delay
/// (<see cref="OperationCanceledException"/>), as the hand-written loops did.
/// </summary>
public sealed class RetryPolicy
{
    private static readonly ResiliencePropertyKey<Func<RetryAttempt, ValueTask>?> OnRetryKey = new("metastone.on-retry");
    private static readonly ResiliencePropertyKey<long> StartedKey = new("metastone.started");

    private readonly ResiliencePipeline _pipeline;
    private readonly TimeProvider _time;

    /// <param name="time">The clock of delays and patience (tests pass one that skips ahead).</param>
    public RetryPolicy(RetryBudget budget, TimeProvider? time = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(budget.MaxAttempts, 1);
        Budget = budget;
        _time = time ?? TimeProvider.System;
        var builder = new ResiliencePipelineBuilder { TimeProvider = _time, Name = budget.Name };
        if (budget.MaxAttempts > 1)
        {
            builder.AddRetry(new RetryStrategyOptions
            {
                MaxRetryAttempts = budget.MaxAttempts == int.MaxValue ? int.MaxValue : budget.MaxAttempts - 1,
                Delay = budget.Delay,
                BackoffType = budget.Backoff,
                MaxDelay = budget.MaxDelay,
                UseJitter = false,
                // A cancelled caller gets the attempt's own failure, as the loops' "when (!token.IsCancellationRequested)" gave it
                // (Polly 8.9 would turn a handled failure of a cancelled call into an OperationCanceledException).
                ShouldHandle = args => ValueTask.FromResult(args.Outcome.Exception is { } e && !args.Context.CancellationToken.IsCancellationRequested
                    && budget.Handles(e) && WithinPatience(args.Context)),
                OnRetry = args => args.Context.Properties.GetValue(OnRetryKey, null) is { } onRetry
                    ? onRetry(new RetryAttempt(args.AttemptNumber + 1, args.Outcome.Exception!, args.RetryDelay))
                    : ValueTask.CompletedTask,
            });
        }
        _pipeline = builder.Build();
    }

    public RetryBudget Budget { get; }

    /// <summary>This budget with another patience (the client's <c>FailoverPatience</c>).</summary>
    public RetryPolicy WithPatience(TimeSpan patience) => new(Budget with { Patience = patience }, _time);

    private bool WithinPatience(ResilienceContext context) =>
        Budget.Patience is not { } patience || _time.GetElapsedTime(context.Properties.GetValue(StartedKey, 0L)) <= patience;

    /// <summary>
    /// Runs <paramref name="call"/> (given the attempt number, 1 for the first, and the token) until it succeeds, fails with a
    /// failure the budget does not retry, or the budget is spent; then its last failure is thrown as it was.
    /// <paramref name="onRetry"/> runs after a retried failure, before the delay (to log, or to change what the next attempt asks).
    /// </summary>
    /// <remarks>
    /// The first attempt runs outside the pipeline: nearly every call succeeds at once, and a k = 32 job makes about 100
    /// of these calls (profiled in the embedded mode: running them all through Polly cost 4 % of the job's CPU). A first
    /// failure that may be retried enters the pipeline as its first attempt, replayed, so attempts, delays and patience are
    /// counted exactly as if the pipeline had made that call.
    /// </remarks>
    public async Task<T> ExecuteAsync<T>(Func<int, CancellationToken, Task<T>> call, CancellationToken cancellationToken = default,
        Func<RetryAttempt, ValueTask>? onRetry = null)
    {
        long started = _time.GetTimestamp();
        ExceptionDispatchInfo firstFailure;
        try { return await call(1, cancellationToken); }
        catch (Exception e) when (Budget.MaxAttempts > 1 && Budget.Handles(e) && !cancellationToken.IsCancellationRequested)
        {
            firstFailure = ExceptionDispatchInfo.Capture(e);
        }
        var context = ResilienceContextPool.Shared.Get(Budget.Name, continueOnCapturedContext: true, cancellationToken);
        context.Properties.Set(OnRetryKey, onRetry);
        context.Properties.Set(StartedKey, started);
        try
        {
            var state = new CallState<T>(call, firstFailure);
            return await _pipeline.ExecuteAsync(static (ctx, s) => ++s.Attempt == 1
                ? ValueTask.FromException<T>(s.FirstFailure.SourceException)
                : new ValueTask<T>(s.Call(s.Attempt, ctx.CancellationToken)), context, state);
        }
        finally
        {
            ResilienceContextPool.Shared.Return(context);
        }
    }

    public Task ExecuteAsync(Func<int, CancellationToken, Task> call, CancellationToken cancellationToken = default,
        Func<RetryAttempt, ValueTask>? onRetry = null) =>
        ExecuteAsync(async (attempt, token) => { await call(attempt, token); return true; }, cancellationToken, onRetry);

    private sealed class CallState<T>(Func<int, CancellationToken, Task<T>> call, ExceptionDispatchInfo firstFailure)
    {
        public Func<int, CancellationToken, Task<T>> Call { get; } = call;
        public ExceptionDispatchInfo FirstFailure { get; } = firstFailure;
        public int Attempt;
    }
}
