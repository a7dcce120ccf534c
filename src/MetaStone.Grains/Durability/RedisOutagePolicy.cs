using Polly;
using Polly.Retry;
using Polly.Timeout;
using StackExchange.Redis;

namespace MetaStone.Grains.Durability;

/// <summary>The job store did not answer within the outage tolerance: the one error a Redis outage may turn into.</summary>
public sealed class JobStoreUnavailableException(string message, Exception inner) : Exception(message, inner);

/// <summary>
/// Rides out a Redis outage (a restart, a fail-over, a network blip) for up to <see cref="Tolerance"/> on every grain
/// state read and write, with Polly: retries with capped exponential back-off and jitter inside one overall timeout.
/// </summary>
/// <remarks>
/// Issue 11: StackExchange.Redis keeps commands in its backlog while disconnected but fails them after its 5 s async
/// timeout ("message timed out in the backlog"), so a 6 s Redis restart failed every running job although the data
/// survived (AOF). Orleans' Redis grain storage does not retry (it wraps the error in its own exception and the grain
/// call fails), so every <see cref="DurableState{T}"/> write goes through this policy. A state write is a whole-record
/// put guarded by its ETag: a retried write that had reached Redis before the connection broke comes back as an ETag
/// conflict, which <see cref="DurableState{T}"/> resolves by re-reading. Redis answers <c>LOADING</c> while it replays
/// its AOF after a restart: that is an outage too.
/// </remarks>
public sealed class RedisOutagePolicy
{
    public static readonly TimeSpan DefaultTolerance = TimeSpan.FromSeconds(60);

    private readonly ResiliencePipeline _pipeline;

    public RedisOutagePolicy(TimeSpan tolerance, Action<string>? onRetry = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(tolerance, TimeSpan.Zero);
        Tolerance = tolerance;
        var builder = new ResiliencePipelineBuilder();
        if (tolerance > TimeSpan.Zero)
        {
            builder.AddTimeout(new TimeoutStrategyOptions { Timeout = tolerance });
            builder.AddRetry(new RetryStrategyOptions
            {
                ShouldHandle = new PredicateBuilder().Handle<Exception>(IsOutage),
                MaxRetryAttempts = int.MaxValue,
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = TimeSpan.FromMilliseconds(200),
                MaxDelay = TimeSpan.FromSeconds(2),
                OnRetry = args =>
                {
                    onRetry?.Invoke($"Redis unavailable ({args.Outcome.Exception?.GetType().Name}), retry {args.AttemptNumber + 1} in {args.RetryDelay.TotalSeconds:0.0} s");
                    return ValueTask.CompletedTask;
                },
            });
        }
        _pipeline = builder.Build();
    }

    /// <summary>How long one store operation keeps trying through an outage before it fails.</summary>
    public TimeSpan Tolerance { get; }

    /// <summary>True for the failures an outage produces (not for a bad command or a script error).</summary>
    /// <summary>True for a Redis connection loss, timeout or restart, also when a storage provider wrapped it.</summary>
    /// <remarks>
    /// Orleans' Redis grain storage (10.4) does not keep the client's exception as the inner exception: it throws a
    /// <c>RedisStorageException</c> whose message ends with the client exception's type and text, inside an
    /// <c>OrleansException</c> ("Error from storage provider …"). Seen in the Redis outage test: the coordinator's write
    /// failed at once with "…RedisStorageException: Failed to write grain state … StackExchange.Redis.RedisConnectionException:
    /// The message timed out in the backlog…". So the storage provider's message is read too.
    /// </remarks>
    public static bool IsOutage(Exception e)
    {
        for (Exception? x = e; x is not null; x = x.InnerException)
            if (x switch
                {
                    RedisConnectionException or RedisTimeoutException => true,
                    RedisServerException s => IsRestarting(s.Message),
                    Orleans.Persistence.Redis.RedisStorageException s => NamesAnOutage(s.Message),
                    OrleansException o when o.Message.StartsWith("Error from storage provider", StringComparison.Ordinal) => NamesAnOutage(o.Message),
                    _ => false,
                })
                return true;
        return false;
    }

    private static bool IsRestarting(string message) =>
        message.StartsWith("LOADING", StringComparison.Ordinal) || message.StartsWith("BUSY", StringComparison.Ordinal);

    private static bool NamesAnOutage(string message) =>
        message.Contains(nameof(RedisConnectionException), StringComparison.Ordinal)
        || message.Contains(nameof(RedisTimeoutException), StringComparison.Ordinal)
        || message.Contains("RedisServerException: LOADING", StringComparison.Ordinal)
        || message.Contains("RedisServerException: BUSY", StringComparison.Ordinal);

    /// <remarks>
    /// Runs on the caller's scheduler throughout (<c>continueOnCapturedContext</c>, no <c>ConfigureAwait(false)</c>): the
    /// operation is a grain's state write, and Orleans refuses one from a thread-pool continuation ("Activation access
    /// violation"), which is where a retry after Polly's back-off delay would otherwise run.
    /// </remarks>
    public async Task<T> RunAsync<T>(string what, Func<Task<T>> operation)
    {
        // No tolerance (no Redis: the embedded mode and tests): the operation alone, without a pipeline and its pooled context.
        if (Tolerance == TimeSpan.Zero) return await operation();
        var context = ResilienceContextPool.Shared.Get(continueOnCapturedContext: true);
        try { return await _pipeline.ExecuteAsync(static async (_, op) => await op(), context, operation); }
        catch (TimeoutRejectedException e)
        {
            throw new JobStoreUnavailableException($"the job store (Redis) did not answer for {Tolerance.TotalSeconds:0} s while {what}", e);
        }
        finally
        {
            ResilienceContextPool.Shared.Return(context);
        }
    }

    public Task RunAsync(string what, Func<Task> operation) =>
        RunAsync(what, async () => { await operation(); return true; });
}
