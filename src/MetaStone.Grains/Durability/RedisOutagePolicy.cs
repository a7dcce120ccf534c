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
    public static bool IsOutage(Exception e)
    {
        for (Exception? x = e; x is not null; x = x.InnerException)
            if (x switch
                {
                    RedisConnectionException or RedisTimeoutException => true,
                    RedisServerException s => s.Message.StartsWith("LOADING", StringComparison.Ordinal) || s.Message.StartsWith("BUSY", StringComparison.Ordinal),
                    _ => false,
                })
                return true;
        return false;
    }

    public async Task<T> RunAsync<T>(string what, Func<Task<T>> operation)
    {
        try { return await _pipeline.ExecuteAsync(static async (op, _) => await op().ConfigureAwait(false), operation, CancellationToken.None).ConfigureAwait(false); }
        catch (TimeoutRejectedException e)
        {
            throw new JobStoreUnavailableException($"the job store (Redis) did not answer for {Tolerance.TotalSeconds:0} s while {what}", e);
        }
    }

    public Task RunAsync(string what, Func<Task> operation) =>
        RunAsync(what, async () => { await operation().ConfigureAwait(false); return true; });
}
