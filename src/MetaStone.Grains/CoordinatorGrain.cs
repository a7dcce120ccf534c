using MetaStone.Contracts;
using MetaStone.Grains.Durability;
using MetaStone.Grains.Jobs;
using MetaStone.Reasoning;
using Microsoft.Extensions.Logging;
using Orleans.Runtime;

namespace MetaStone.Grains;

/// <summary>
/// Runs one job (key = job id): validates it, admits it, persists it before acknowledging, fans out k candidate grains,
/// selects the winner and persists the result. Each candidate persists itself the moment it is generated
/// (<see cref="CandidateGrain"/>), so an activation that resumes a running job (its previous silo died; the recovery
/// reminder or any call activates it elsewhere) gets the finished candidates back from their records and generates only
/// what is missing. Reentrant so status, progress and cancel calls are served while candidates run.
/// </summary>
[Reentrant]
public sealed partial class CoordinatorGrain(
    [PersistentState("job", StorageNames.Jobs)] IPersistentState<JobRecord> record,
    RedisOutagePolicy outage, DurabilityOptions durability, ILocalSiloDetails silo, AdmissionOptions admission, GrainReferences grains,
    ILogger<CoordinatorGrain> logger)
    : RecoverableRunGrain(durability, logger), ICoordinatorGrain
{
    private readonly DurableState<JobRecord> _record = new(record, outage);
    private readonly string _runId = Guid.NewGuid().ToString("N");
    private readonly List<ProgressEvent> _events = [];
    private readonly Dictionary<int, CandidateResult> _candidates = [];
    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource<JobResult> _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private SelectionMethod _selection;
    private bool _runCounted;

    private JobRecord Job => _record.Value;
    protected override string Kind => "job";
    protected override bool IsKnown => _record.Exists;
    protected override bool IsRunning => Job.State == JobState.Running;

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        _completion.Task.ContinueWith(t => _ = t.Exception, TaskContinuationOptions.OnlyOnFaulted).Ignore();
        if (IsKnown) Restore();
        return Task.CompletedTask;
    }

    public async Task<JobStatus> SubmitAsync(JobRequest request)
    {
        if (IsKnown) return Status(); // the same job submitted again (a client retry): idempotent
        var (k, selection) = JobRequestRules.Validate(request);
        await CheckPromptAsync(request);
        var admissionGrain = grains.Get<IAdmissionGrain>(0);
        if (!await admissionGrain.TryAdmitAsync(Id, admission.MaxRunningJobs))
        {
            // Nothing was stored: the client gets a clear "busy, retry" and this activation goes away.
            LogRefused(logger, Id, admission.MaxRunningJobs);
            DeactivateOnIdle();
            throw new ClusterBusyException($"cluster busy: it is running its limit of {admission.MaxRunningJobs} jobs; the job was not accepted, submit it again later");
        }
        (Job.Request, Job.K, Job.State, Job.CreatedAt, Job.Runs) = (request, k, JobState.Running, DateTimeOffset.UtcNow, 1);
        (_selection, _runCounted) = (selection, true);
        try
        {
            await _record.WriteAsync($"accepting job {Id}");
            await KeepRecoverableAsync();
        }
        catch
        {
            // Not acknowledged: the client's retry submits it again (admission is idempotent for the same id).
            DeactivateOnIdle();
            throw;
        }
        MetaStoneMetrics.JobsAccepted.Add(1);
        Emit(ProgressKind.Accepted);
        StartRun();
        LogAccepted(logger, Id, k, silo.Name);
        return Status();
    }

    public async Task<JobResult> AwaitResultAsync(CancellationToken cancellationToken)
    {
        EnsureKnown();
        return await _completion.Task.WaitAsync(cancellationToken);
    }

    public Task<JobResult?> GetResultAsync()
    {
        EnsureKnown();
        return Task.FromResult(Job.Result);
    }

    public Task<JobStatus> GetStatusAsync()
    {
        EnsureKnown();
        return Task.FromResult(Status());
    }

    public async Task<ProgressPage> GetProgressAsync(string? runId, int afterSequence, TimeSpan maxWait, CancellationToken cancellationToken)
    {
        EnsureKnown();
        if (runId != _runId) afterSequence = -1; // a new coordinator activation numbers its events afresh
        if (!_events.Any(e => e.Sequence > afterSequence) && IsRunning) await WaitForChangeAsync(maxWait, cancellationToken);
        return new ProgressPage(_runId, _events.Where(e => e.Sequence > afterSequence).ToList());
    }

    public async Task<JobStatus> CancelAsync(string reason)
    {
        EnsureKnown();
        if (!IsRunning) return Status();
        Job.State = JobState.Cancelled;
        Job.Error = string.IsNullOrWhiteSpace(reason) ? "cancelled by the client" : reason;
        _stop.Cancel(); // flows to every candidate call, and from there to the replica and the engine
        // Token propagation is best effort; tell the unfinished candidates directly as well.
        var unfinished = Enumerable.Range(0, Job.K).Where(i => !_candidates.ContainsKey(i)).Select(i => Candidate(i).CancelAsync());
        try { await Task.WhenAll(unfinished); }
        catch (Exception e) { LogStoppingCandidatesFailed(logger, Id, e.Message); }
        await EndAsync();
        Emit(ProgressKind.Cancelled, message: Job.Error);
        _completion.TrySetException(new OperationCanceledException($"job {Id} was cancelled: {Job.Error}"));
        return Status();
    }

    private void Restore()
    {
        _selection = JobRequestRules.Validate(Job.Request!).Selection;
        Emit(ProgressKind.Accepted);
        switch (Job.State)
        {
            case JobState.Running:
                LogResuming(logger, Id, silo.Name);
                StartRun();
                break;
            case JobState.Completed when Job.Result is not null:
                foreach (var candidate in Job.Result.Candidates) _candidates[candidate.Index] = candidate;
                Emit(ProgressKind.Completed);
                _completion.TrySetResult(Job.Result);
                break;
            case JobState.Cancelled:
                Emit(ProgressKind.Cancelled, message: Job.Error);
                _completion.TrySetException(new OperationCanceledException($"job {Id} was cancelled: {Job.Error}"));
                break;
            default:
                Emit(ProgressKind.Failed, message: Job.Error);
                _completion.TrySetException(new InvalidOperationException($"job {Id} failed: {Job.Error}"));
                break;
        }
    }

    private async Task CheckPromptAsync(JobRequest request)
    {
        var registry = grains.Get<IReplicaRegistryGrain>(0);
        string? checking = null;
        await ClusterRetries.PromptCheck.ExecuteAsync(async (_, _) =>
        {
            checking = null;
            string replica = await registry.AnyReplicaAsync();
            checking = replica;
            return await grains.Get<IReplicaGrain>(replica).CheckPromptAsync(request);
        }, onRetry: async _ =>
        {
            // The replica's silo is gone: forgotten, so the next look offers another (a registry lost mid-look is just asked again).
            if (checking is not null) await registry.ForgetAsync(checking);
        });
    }

    protected override async Task RunAsync()
    {
        try
        {
            if (!_runCounted)
            {
                // A resumed run (this activation did not accept the job, whose record counted the first run): count it.
                Job.Runs++;
                await _record.WriteAsync($"resuming job {Id}");
                _runCounted = true;
            }
            var missing = Enumerable.Range(0, Job.K).Where(i => !_candidates.ContainsKey(i)).ToList();
            await Task.WhenAll(missing.Select(i => RunCandidateAsync(i, _stop.Token)));
            if (!IsRunning) return;
            var ordered = _candidates.Values.OrderBy(c => c.Index).ToList();
            int position = CandidateSelection.SelectWinner(ordered.Select(c => new ScoredCandidate(c.Index, c.Score, c.Answer)).ToList(), _selection);
            var result = new JobResult
            {
                JobId = Id,
                Request = Job.Request!,
                K = Job.K,
                Selection = Job.Request!.Selection,
                WinnerIndex = ordered[position].Index,
                Candidates = ordered,
                ElapsedSeconds = (DateTimeOffset.UtcNow - Job.CreatedAt).TotalSeconds,
                CoordinatorRuns = Job.Runs,
            };
            (Job.Result, Job.State) = (result, JobState.Completed);
            await EndAsync();
            MetaStoneMetrics.JobCompleted(Job.Request!, Job.K, result.ElapsedSeconds);
            Emit(ProgressKind.Completed);
            _completion.TrySetResult(result);
            // The result holds every candidate now: their idempotency records can go (one-way, after the client has it).
            if (Durability.PersistCandidates)
                foreach (var index in Enumerable.Range(0, Job.K)) Candidate(index).ForgetAsync().Ignore();
            LogCompleted(logger, Id, result.WinnerIndex, result.Winner.Score);
        }
        catch (Exception) when (Job.State == JobState.Cancelled)
        {
            // CancelAsync recorded the outcome.
        }
        catch (Exception e) when (e is ActivationReplacedException
            || (e is InvalidOperationException && e.Message.StartsWith("Attempt to access an invalid activation", StringComparison.Ordinal)))
        {
            // Orleans invalidated this activation mid-run, or another activation took over the record (after a silo loss two
            // activations of the job's coordinator can exist for a moment). The job is not failed: its record says running,
            // the surviving activation continues it, and waiting clients retry and reach that one (a transient fault for them).
            LogReplaced(logger, Id);
            _completion.TrySetException(new ActivationReplacedException($"the coordinator of job {Id} was replaced while it ran; ask again"));
            DeactivateOnIdle();
        }
        catch (Exception e)
        {
            Job.State = JobState.Failed;
            Job.Error = e.Message;
            MetaStoneMetrics.JobsFailed.Add(1);
            LogFailed(logger, e, Id);
            try { await EndAsync(); }
            catch (Exception s) { LogRecordingFailureFailed(logger, s, Id); }
            Emit(ProgressKind.Failed, message: Job.Error);
            _completion.TrySetException(new InvalidOperationException($"job {Id} failed: {Job.Error}"));
        }
    }

    /// <summary>Persists the job's outcome and frees its place in admission control.</summary>
    private async Task EndAsync()
    {
        await _record.WriteAsync($"recording the end of job {Id}");
        var admissionGrain = grains.Get<IAdmissionGrain>(0);
        try { await ClusterRetries.AdmissionRelease.ExecuteAsync((_, _) => admissionGrain.ReleaseAsync(Id)); }
        catch (Exception e)
        {
            // Admission control finds ended jobs itself (AdmissionGrain.ReconcilePeriod).
            LogReleasingAdmissionFailed(logger, Id, e.Message);
        }
    }

    private async Task RunCandidateAsync(int index, CancellationToken cancellationToken)
    {
        Emit(ProgressKind.CandidateStarted, index);
        var work = new CandidateWork(Id, index, Job.Request!.Seed + index, Job.Request) { CallerLost = Job.Runs > 1 };
        var candidate = await ClusterRetries.CandidateCall.ExecuteAsync((_, token) => Candidate(index).GenerateAsync(work, token), cancellationToken,
            onRetry: lost =>
            {
                // The candidate grain's silo died: the next call activates it on a survivor, same seed, and that activation
                // looks for the generation the lost one had started on a replica (measured: without this, the two survivors
                // of a kill generated 9 candidates of a 32-candidate job twice).
                LogCandidateLost(logger, Id, index, lost.Failure.GetType().Name);
                work = work with { CallerLost = true };
                return ValueTask.CompletedTask;
            });
        if (!IsRunning || !_candidates.TryAdd(index, candidate)) return;
        Emit(ProgressKind.CandidateFinished, index, candidate.Score, candidate.Replica);
    }

    private ICandidateGrain Candidate(int index) => grains.Get<ICandidateGrain>($"{Id}/{index}");

    private (int? Index, double? Score) Best()
    {
        CandidateResult? best = null;
        foreach (var c in _candidates.Values)
            if (best is null || c.Score > best.Score || (c.Score == best.Score && c.Index < best.Index)) best = c;
        return (best?.Index, best?.Score);
    }

    private JobStatus Status()
    {
        var (bestIndex, bestScore) = Job.Result is { } result ? (result.WinnerIndex, result.Winner.Score) : Best();
        return new JobStatus
        {
            JobId = Id, State = Job.State, K = Job.K, Finished = _candidates.Count, BestIndex = bestIndex, BestScore = bestScore,
            Error = Job.Error, CreatedAt = Job.CreatedAt, CoordinatorSilo = silo.Name,
        };
    }

    private void Emit(ProgressKind kind, int? index = null, double? score = null, string? replica = null, string? message = null)
    {
        var (bestIndex, bestScore) = kind == ProgressKind.Completed && Job.Result is { } result ? (result.WinnerIndex, result.Winner.Score) : Best();
        _events.Add(new ProgressEvent
        {
            Sequence = _events.Count, Kind = kind, CandidateIndex = index, Score = score, Replica = replica,
            Finished = _candidates.Count, K = Job.K, BestIndex = bestIndex, BestScore = bestScore, Message = message,
        });
        Signal();
    }

    // Log events 1100–1199 (numbering in LogEventIds).
    [LoggerMessage(EventId = 1101, Level = LogLevel.Warning, Message = "job {Job} refused: the cluster runs its limit of {Max} jobs")]
    private static partial void LogRefused(ILogger logger, string job, int max);

    [LoggerMessage(EventId = 1102, Level = LogLevel.Information, Message = "job {Job} accepted: k = {K} on silo {Silo}")]
    private static partial void LogAccepted(ILogger logger, string job, int k, string silo);

    [LoggerMessage(EventId = 1103, Level = LogLevel.Warning, Message = "job {Job}: telling candidates to stop failed: {Error}")]
    private static partial void LogStoppingCandidatesFailed(ILogger logger, string job, string error);

    [LoggerMessage(EventId = 1104, Level = LogLevel.Warning, Message = "job {Job}: resuming on silo {Silo}")]
    private static partial void LogResuming(ILogger logger, string job, string silo);

    [LoggerMessage(EventId = 1105, Level = LogLevel.Information, Message = "job {Job} completed: winner {Winner} score {Score:F4}")]
    private static partial void LogCompleted(ILogger logger, string job, int winner, double score);

    [LoggerMessage(EventId = 1106, Level = LogLevel.Warning, Message = "job {Job}: this coordinator activation was replaced while it ran; the job continues on the surviving one")]
    private static partial void LogReplaced(ILogger logger, string job);

    [LoggerMessage(EventId = 1107, Level = LogLevel.Error, Message = "job {Job} failed")]
    private static partial void LogFailed(ILogger logger, Exception exception, string job);

    [LoggerMessage(EventId = 1108, Level = LogLevel.Error, Message = "job {Job}: recording the failure failed")]
    private static partial void LogRecordingFailureFailed(ILogger logger, Exception exception, string job);

    [LoggerMessage(EventId = 1109, Level = LogLevel.Warning, Message = "job {Job}: releasing its admission failed ({Error}); admission control reconciles it")]
    private static partial void LogReleasingAdmissionFailed(ILogger logger, string job, string error);

    [LoggerMessage(EventId = 1110, Level = LogLevel.Warning, Message = "job {Job}: candidate {Index} lost ({Error}), reissuing")]
    private static partial void LogCandidateLost(ILogger logger, string job, int index, string error);
}
