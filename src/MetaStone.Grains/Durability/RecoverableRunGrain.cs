using Microsoft.Extensions.Logging;
using Orleans.Runtime;

namespace MetaStone.Grains.Durability;

/// <summary>How much durability the silo provides; a cluster wants all of it, the one-process embedded mode none of these.</summary>
/// <param name="RecoverRunsOfDeadSilos">Recovery reminders for running jobs and sweeps (pointless when there is one silo: if it
/// dies, everything dies with it).</param>
/// <param name="PersistCandidates">Candidate idempotency records (pointless in one process: a candidate's record can only be lost
/// together with its job). Measured: 32 records a k = 32 job more than doubled the embedded orchestration overhead.</param>
public sealed record DurabilityOptions(bool RecoverRunsOfDeadSilos, bool PersistCandidates)
{
    public static DurabilityOptions Cluster { get; } = new(true, true);
    public static DurabilityOptions SingleProcess { get; } = new(false, false);
}

/// <summary>
/// What a job's coordinator and a sweep share: a long run whose record is persisted, and which outlives the silo it
/// runs on. An Orleans reminder ticks every <see cref="RecoveryPeriod"/> while the record says "running": when the
/// silo dies, the next tick (from a surviving silo's reminder service) activates the grain on a live silo, whose
/// activation reads the record and resumes the run. The reminder is removed when the run ends. A grain timer keeps a
/// running activation from being collected as idle while it awaits long calls. Long polls (a client following
/// progress) wait on <see cref="WaitForChangeAsync"/>.
/// </summary>
public abstract partial class RecoverableRunGrain(DurabilityOptions durability, ILogger logger) : Grain, IRemindable
{
    /// <summary>Period of the recovery reminder: with failure detection, how soon a run of a dead silo resumes elsewhere.</summary>
    public static readonly TimeSpan RecoveryPeriod = TimeSpan.FromSeconds(5);
    private const string RecoveryReminder = "recover";

    private Task? _run;
    private IGrainTimer? _keepAlive;

    protected DurabilityOptions Durability => durability;
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>"job" or "sweep", for messages.</summary>
    protected abstract string Kind { get; }
    /// <summary>A record exists (the job or sweep was accepted).</summary>
    protected abstract bool IsKnown { get; }
    /// <summary>The record says the run has not ended.</summary>
    protected abstract bool IsRunning { get; }
    /// <summary>One run to its end; it persists the outcome itself.</summary>
    protected abstract Task RunAsync();

    protected string Id => this.GetPrimaryKeyString();

    /// <summary>Registers the recovery reminder: call it after the accepted record is written, before acknowledging.</summary>
    protected async Task KeepRecoverableAsync()
    {
        if (durability.RecoverRunsOfDeadSilos) await this.RegisterOrUpdateReminder(RecoveryReminder, RecoveryPeriod, RecoveryPeriod);
    }

    /// <summary>Starts a run unless one is in progress in this activation.</summary>
    protected void StartRun()
    {
        if (_run is { IsCompleted: false }) return;
        _keepAlive ??= this.RegisterGrainTimer(_ =>
        {
            DelayDeactivation(RecoveryPeriod * 3);
            return Task.CompletedTask;
        }, new GrainTimerCreationOptions(TimeSpan.Zero, RecoveryPeriod) { Interleave = true });
        _run = RunToEndAsync();
    }

    private async Task RunToEndAsync()
    {
        try { await RunAsync(); }
        finally
        {
            Signal();
            if (!IsRunning)
            {
                _keepAlive?.Dispose();
                _keepAlive = null;
                if (durability.RecoverRunsOfDeadSilos) await ForgetReminderAsync();
            }
        }
    }

    public Task ReceiveReminder(string reminderName, TickStatus status)
    {
        if (IsKnown && IsRunning)
        {
            StartRun(); // a no-op while this activation runs it; a resume on a fresh activation
            return Task.CompletedTask;
        }
        return ForgetReminderAsync();
    }

    private async Task ForgetReminderAsync()
    {
        try
        {
            if (await this.GetReminder(RecoveryReminder) is { } reminder) await this.UnregisterReminder(reminder);
        }
        catch (Exception e)
        {
            // Harmless: the next tick finds the run ended and tries again.
            LogRemovingReminderFailed(logger, Kind, Id, e.Message);
        }
    }

    /// <summary>Wakes every long poll.</summary>
    protected void Signal()
    {
        var changed = _changed;
        _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        changed.TrySetResult();
    }

    /// <summary>Waits for the next <see cref="Signal"/>, at most <paramref name="maxWait"/> (capped at 30 s: a poll is a grain call).</summary>
    protected async Task WaitForChangeAsync(TimeSpan maxWait, CancellationToken cancellationToken)
    {
        var wait = maxWait > TimeSpan.FromSeconds(30) ? TimeSpan.FromSeconds(30) : maxWait;
        try { await _changed.Task.WaitAsync(wait, cancellationToken); }
        catch (TimeoutException) { }
    }

    /// <summary>Throws "unknown id" for a grain without a record, and lets the empty activation go.</summary>
    protected void EnsureKnown()
    {
        if (IsKnown) return;
        DeactivateOnIdle();
        throw new KeyNotFoundException($"unknown {Kind} id '{Id}'");
    }

    // Log events 1500–1599 (numbering in LogEventIds).
    [LoggerMessage(EventId = 1501, Level = LogLevel.Debug, Message = "{Kind} {Id}: removing the recovery reminder failed: {Error}")]
    private static partial void LogRemovingReminderFailed(ILogger logger, string kind, string id, string error);
}
