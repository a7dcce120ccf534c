using MetaStone.Contracts;
using Microsoft.Extensions.Logging;

namespace MetaStone.Grains.Engines;

/// <summary>
/// The candidates this silo's replicas are generating and those they finished in the last <see cref="FinishedRetention"/>,
/// joinable by (replica, job, index, seed): when a candidate's caller dies (its silo was killed) the generation goes on,
/// and the resumed job's new caller joins it or takes its result instead of generating the candidate a second time.
/// </summary>
/// <remarks>
/// A silo singleton, not state of the replica grain: a silo loss can make Orleans replace a surviving replica grain's
/// activation (its directory entry lived on the dead silo), and with the table in the grain a replaced activation forgot
/// every candidate it had just finished (measured: 42–52 generations for a 32-candidate job in some coordinator-kill runs).
/// Bookkeeping runs in continuations on the thread pool, so it completes even if the activation that started the work is
/// gone. Thread-safe.
/// </remarks>
public sealed partial class ReplicaWork(ILogger<ReplicaGrain> logger)
{
    /// <summary>How long a finished candidate stays available to a resumed job (failure detection plus a recovery tick, with margin).</summary>
    public static readonly TimeSpan FinishedRetention = TimeSpan.FromMinutes(2);

    private readonly Lock _gate = new();
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, long> _ended = new(StringComparer.Ordinal);
    private readonly Dictionary<Key, Generation> _inFlight = [];
    private readonly Dictionary<Key, (CandidateResult Result, DateTime At)> _finished = [];
    private DateTime _oldestFinished;

    private readonly record struct Key(string Replica, string Job, int Index, long Seed);

    /// <summary>A generation in flight; any joiner's cancellation stops it (a candidate belongs to one job, which was cancelled).</summary>
    private sealed class Generation
    {
        public CancellationTokenSource Stop { get; } = new();
        public Task<CandidateResult> Result { get; set; } = null!;
    }

    /// <summary>
    /// The candidate's result: from the finished list, by joining its generation, or by generating it on
    /// <paramref name="engine"/> when one is given; null when it is none of these.
    /// </summary>
    public Task<CandidateResult>? Find(string replica, CandidateWork work, ICandidateEngine? engine, CancellationToken cancellationToken)
    {
        var key = new Key(replica, work.JobId, work.Index, work.Seed);
        Generation? generation;
        lock (_gate)
        {
            if (_finished.TryGetValue(key, out var done)) return Task.FromResult(done.Result);
            if (!_inFlight.TryGetValue(key, out generation))
            {
                if (engine is null) return null;
                generation = new Generation();
                _inFlight[key] = generation;
                generation.Result = Track(key, GenerateAsync(engine, replica, work, generation.Stop.Token));
            }
        }
        return JoinAsync(generation, cancellationToken);
    }

    /// <summary>
    /// Counts one candidate call of <paramref name="replica"/> as ended (returned, failed or cancelled): the running count the
    /// heartbeat reports as <see cref="ReplicaLoad.CandidatesEnded"/>, which releases the registry's placement of it.
    /// </summary>
    public void CallEnded(string replica) => _ended.AddOrUpdate(replica, 1, static (_, n) => n + 1);

    /// <summary>Candidate calls of <paramref name="replica"/> ended since this silo started.</summary>
    public long CallsEnded(string replica) => _ended.TryGetValue(replica, out long n) ? n : 0;

    /// <summary>Off any grain's context (<c>ConfigureAwait(false)</c>): the work must finish even when its caller's activation is gone.</summary>
    private async Task<CandidateResult> GenerateAsync(ICandidateEngine engine, string replica, CandidateWork work, CancellationToken cancellationToken)
    {
        MetaStoneMetrics.CandidatesInFlight.Add(1);
        try
        {
            var result = await engine.GenerateAsync(work, cancellationToken).ConfigureAwait(false) with { Replica = replica };
            MetaStoneMetrics.Generated(result);
            LogGenerated(logger, work.JobId, work.Index, work.Seed, replica, result.ResponseTokens);
            return result;
        }
        finally
        {
            MetaStoneMetrics.CandidatesInFlight.Add(-1);
        }
    }

    // The replica grain's category and event id: what operators and the kill tests (which count generations) filter on.
    [LoggerMessage(EventId = ReplicaGrain.CandidateGeneratedEventId, Level = LogLevel.Debug,
        Message = "generated candidate {Index} of job {Job} (seed {Seed}) on {Replica}: {Tokens} tokens")]
    private static partial void LogGenerated(ILogger logger, string job, int index, long seed, string replica, int tokens);

    private Task<CandidateResult> Track(Key key, Task<CandidateResult> work) =>
        work.ContinueWith(t =>
        {
            lock (_gate)
            {
                _inFlight.Remove(key);
                if (t.IsCompletedSuccessfully) Remember(key, t.Result);
            }
            return t;
        }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default).Unwrap();

    private void Remember(Key key, CandidateResult result)
    {
        var now = DateTime.UtcNow;
        if (_finished.Count > 0 && now - _oldestFinished > FinishedRetention)
        {
            foreach (var old in _finished.Where(e => now - e.Value.At > FinishedRetention).Select(e => e.Key).ToList()) _finished.Remove(old);
            _oldestFinished = _finished.Count == 0 ? now : _finished.Values.Min(e => e.At);
        }
        if (_finished.Count == 0) _oldestFinished = now;
        _finished[key] = (result, now);
    }

    private static async Task<CandidateResult> JoinAsync(Generation generation, CancellationToken cancellationToken)
    {
        using var stop = cancellationToken.Register(static s => ((CancellationTokenSource)s!).Cancel(), generation.Stop);
        return await generation.Result;
    }
}
