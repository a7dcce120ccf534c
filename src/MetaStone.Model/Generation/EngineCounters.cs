using System.Diagnostics;

namespace MetaStone.Model.Generation;

/// <summary>The engine's live counters: written by the engine thread (queued also by submitters), read by anyone as an
/// <see cref="EngineStats"/> snapshot.</summary>
internal sealed class EngineCounters
{
    private long _generated, _prefillComputed, _prefillReused, _decodeSteps, _stepsScored, _failedSteps, _restarted, _failedCandidates;
    private int _active, _queued;
    private double _tokensPerSecond;
    private long _rateWindowTokens;
    private readonly Stopwatch _rateWindow = Stopwatch.StartNew();

    public EngineStats Snapshot(int slots) => new()
    {
        ActiveSequences = Volatile.Read(ref _active),
        QueuedSequences = Volatile.Read(ref _queued),
        Slots = slots,
        GeneratedTokens = Interlocked.Read(ref _generated),
        PrefillTokensComputed = Interlocked.Read(ref _prefillComputed),
        PrefillTokensReused = Interlocked.Read(ref _prefillReused),
        DecodeSteps = Interlocked.Read(ref _decodeSteps),
        StepsScored = Interlocked.Read(ref _stepsScored),
        FailedSteps = Interlocked.Read(ref _failedSteps),
        RestartedCandidates = Interlocked.Read(ref _restarted),
        FailedCandidates = Interlocked.Read(ref _failedCandidates),
        TokensPerSecond = Volatile.Read(ref _tokensPerSecond),
    };

    public void AddQueued(int count) => Interlocked.Add(ref _queued, count);
    public void AddActive(int count) => Interlocked.Add(ref _active, count);
    public void ResetActive() => Volatile.Write(ref _active, 0);
    public void ResetQueued() => Volatile.Write(ref _queued, 0);
    public void AddPrefill(long computed, long reused)
    {
        if (computed != 0) Interlocked.Add(ref _prefillComputed, computed);
        if (reused != 0) Interlocked.Add(ref _prefillReused, reused);
    }
    public void DecodeStep() => Interlocked.Increment(ref _decodeSteps);
    public void AddStepsScored(int count) => Interlocked.Add(ref _stepsScored, count);
    public void FailedStep() => Interlocked.Increment(ref _failedSteps);
    public void RestartedCandidate() => Interlocked.Increment(ref _restarted);
    public void FailedCandidate() => Interlocked.Increment(ref _failedCandidates);

    /// <summary>Counts generated tokens and refreshes the tokens-per-second rate about once a second (engine thread).</summary>
    public void AddGenerated(int tokens)
    {
        Interlocked.Add(ref _generated, tokens);
        _rateWindowTokens += tokens;
        double seconds = _rateWindow.Elapsed.TotalSeconds;
        if (seconds >= 1.0)
        {
            Volatile.Write(ref _tokensPerSecond, _rateWindowTokens / seconds);
            _rateWindowTokens = 0;
            _rateWindow.Restart();
        }
    }
}
