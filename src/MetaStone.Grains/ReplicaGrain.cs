using MetaStone.Contracts;
using MetaStone.Grains.Engines;
using Microsoft.Extensions.Logging;
using MetaStone.Grains.Placement;
using Orleans.Runtime;

namespace MetaStone.Grains;

/// <summary>
/// Thin reentrant facade over one device's engine on its own silo: many candidates call it at once and the engine
/// batches them, so the grain never serializes generation.
/// </summary>
[Reentrant, ReplicaPlacement]
public sealed partial class ReplicaGrain(ReplicaEngines engines, ILocalSiloDetails silo, SiloDrain drain, ILogger<ReplicaGrain> logger) : Grain, IReplicaGrain
{
    /// <summary>How long a finished candidate stays available to a resumed job (failure detection plus a recovery tick, with margin).</summary>
    public static readonly TimeSpan FinishedRetention = TimeSpan.FromMinutes(2);
    private readonly Dictionary<(string Job, int Index, long Seed), InFlightGeneration> _inFlight = [];
    private readonly Dictionary<(string Job, int Index, long Seed), (CandidateResult Result, DateTime At)> _finished = [];
    private DateTime _oldestFinished;
    private ICandidateEngine? _engine;

    private ICandidateEngine Engine => _engine ?? throw new InvalidOperationException("replica grain is not activated");

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        string key = this.GetPrimaryKeyString();
        var (siloName, device) = ReplicaEngines.ParseReplicaKey(key);
        if (siloName != silo.Name)
            throw new InvalidOperationException($"replica '{key}' was activated on silo '{silo.Name}', which does not own it");
        _engine = engines.ForDevice(device);
        return Task.CompletedTask;
    }

    public Task<CandidateResult> GenerateAsync(CandidateWork work, CancellationToken cancellationToken)
    {
        if (_finished.TryGetValue(Key(work), out var done)) return Task.FromResult(done.Result);
        if (!_inFlight.TryGetValue(Key(work), out var generation))
        {
            if (drain.Draining)
                throw new ReplicaDrainingException($"replica {this.GetPrimaryKeyString()} is stopping and takes no new candidates");
            generation = Start(work);
        }
        return JoinAsync(generation, cancellationToken);
    }

    public async Task<CandidateResult?> JoinAsync(CandidateWork work, CancellationToken cancellationToken) =>
        _finished.TryGetValue(Key(work), out var done) ? done.Result
        : _inFlight.TryGetValue(Key(work), out var generation) ? await JoinAsync(generation, cancellationToken)
        : null;

    private static (string, int, long) Key(CandidateWork work) => (work.JobId, work.Index, work.Seed);

    private InFlightGeneration Start(CandidateWork work)
    {
        var generation = new InFlightGeneration(new CancellationTokenSource());
        _inFlight[Key(work)] = generation;
        generation.Result = GenerateOnEngineAsync(work, generation.Stop.Token);
        return generation;
    }

    private async Task<CandidateResult> GenerateOnEngineAsync(CandidateWork work, CancellationToken cancellationToken)
    {
        MetaStoneMetrics.CandidatesInFlight.Add(1);
        try
        {
            var result = await Engine.GenerateAsync(work, cancellationToken) with { Replica = this.GetPrimaryKeyString() };
            MetaStoneMetrics.Generated(result);
            LogGenerated(logger, work.JobId, work.Index, work.Seed, result.Replica, result.ResponseTokens);
            Remember(Key(work), result);
            return result;
        }
        finally
        {
            MetaStoneMetrics.CandidatesInFlight.Add(-1);
            _inFlight.Remove(Key(work));
        }
    }

    /// <summary>
    /// Keeps a finished result for <see cref="FinishedRetention"/>: when the caller's silo died while this replica generated
    /// (measured: most of a dead coordinator's candidates finish during the seconds failure detection takes), the resumed
    /// job's new caller gets the result here instead of generating the candidate again.
    /// </summary>
    private void Remember((string, int, long) key, CandidateResult result)
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

    /// <summary>Any caller's cancellation stops the generation for all: a candidate belongs to one job, and the job was cancelled.</summary>
    private static async Task<CandidateResult> JoinAsync(InFlightGeneration generation, CancellationToken cancellationToken)
    {
        using var stop = cancellationToken.Register(static s => ((CancellationTokenSource)s!).Cancel(), generation.Stop);
        return await generation.Result!;
    }

    /// <summary>
    /// A generation in flight, joinable by (job, index, seed): when the caller's silo dies the generation goes on, and the
    /// resumed job's new caller joins it instead of generating the candidate a second time.
    /// </summary>
    private sealed class InFlightGeneration(CancellationTokenSource stop)
    {
        public CancellationTokenSource Stop { get; } = stop;
        public Task<CandidateResult>? Result { get; set; }
    }

    public Task<PromptCheck> CheckPromptAsync(JobRequest request) => Task.FromResult(Engine.CheckPrompt(request));

    public Task<ModelInfo> DescribeModelAsync() => Task.FromResult(Engine.Model);

    public Task<ReplicaLoad> GetLoadAsync() => Task.FromResult(LoadOf(this.GetPrimaryKeyString(), Engine));

    public static ReplicaLoad LoadOf(string replica, ICandidateEngine engine)
    {
        var load = engine.Load;
        return new ReplicaLoad
        {
            Replica = replica,
            ActiveSequences = load.ActiveSequences,
            QueuedSequences = load.QueuedSequences,
            Slots = load.Slots,
            TokensPerSecond = load.TokensPerSecond,
            GeneratedTokens = load.GeneratedTokens,
            ContextLength = engine.ContextLength,
        };
    }

    /// <summary>Event id of the one log line per generated candidate, at Debug (the kill tests enable it to count generations).</summary>
    public const int CandidateGeneratedEventId = 1001;

    [LoggerMessage(EventId = CandidateGeneratedEventId, Level = LogLevel.Debug,
        Message = "generated candidate {Index} of job {Job} (seed {Seed}) on {Replica}: {Tokens} tokens")]
    private static partial void LogGenerated(ILogger logger, string job, int index, long seed, string replica, int tokens);
}
