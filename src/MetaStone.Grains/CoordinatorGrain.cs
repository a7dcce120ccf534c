using MetaStone.Contracts;
using MetaStone.Grains.Jobs;
using MetaStone.Reasoning;
using Microsoft.Extensions.Logging;
using Orleans.Runtime;

namespace MetaStone.Grains;

/// <summary>
/// Runs one job (key = job id): validates it, persists it before acknowledging, fans out k candidate grains,
/// persists each candidate as it finishes, selects the winner and records the result. An activation that finds a
/// running job in the store (its previous coordinator's silo died) resumes it and generates only what is missing.
/// Reentrant so status, progress and cancel calls are served while candidates run.
/// </summary>
[Reentrant]
public sealed class CoordinatorGrain(IJobStore store, ILocalSiloDetails silo, AdmissionOptions admission, ILogger<CoordinatorGrain> logger) : Grain, ICoordinatorGrain
{
    /// <summary>How long a coordinator's claim on a job outlives its last renewal (renewed every third of it).</summary>
    public static readonly TimeSpan LeaseTime = TimeSpan.FromSeconds(6);
    /// <summary>Calls of one candidate grain (each of which retries replicas itself) before the job fails.</summary>
    public const int CandidateCallAttempts = 5;

    private readonly string _runId = Guid.NewGuid().ToString("N");
    private readonly List<ProgressEvent> _events = [];
    private readonly Dictionary<int, CandidateResult> _candidates = [];
    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource<JobResult> _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private JobRequest? _request;
    private int _k;
    private SelectionMethod _selection;
    private DateTimeOffset _createdAt;
    private JobState _state;
    private string? _error;
    private JobResult? _result;
    private int _runs;
    private Task? _run;
    private IGrainTimer? _leaseTimer;

    private string JobId => this.GetPrimaryKeyString();

    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        _completion.Task.ContinueWith(t => _ = t.Exception, TaskContinuationOptions.OnlyOnFaulted).Ignore();
        var job = await store.LoadAsync(JobId);
        if (job is not null) Restore(job);
    }

    public async Task<JobStatus> SubmitAsync(JobRequest request)
    {
        if (_request is not null) return Status(); // the same job submitted again (a client retry): idempotent
        var (k, selection) = JobRequestRules.Validate(request);
        await CheckPromptAsync(request);
        var createdAt = DateTimeOffset.UtcNow;
        var outcome = await store.CreateAsync(JobId, request, k, createdAt, admission.MaxRunningJobs);
        if (outcome == CreateOutcome.Busy)
        {
            // Nothing was stored: the client gets a clear "busy, retry" and this activation goes away.
            logger.LogWarning("job {Job} refused: the cluster runs its limit of {Max} jobs", JobId, admission.MaxRunningJobs);
            MetaStoneMetrics.JobsRefused.Add(1);
            DeactivateOnIdle();
            throw new ClusterBusyException($"cluster busy: it is running its limit of {admission.MaxRunningJobs} jobs; the job was not accepted, submit it again later");
        }
        if (outcome == CreateOutcome.Exists)
        {
            // Another activation created it first (only possible during a silo failover); take its record.
            Restore(await store.LoadAsync(JobId) ?? throw new InvalidOperationException($"job {JobId} vanished from the store"));
            return Status();
        }
        (_request, _k, _selection, _createdAt, _state) = (request, k, selection, createdAt, JobState.Running);
        MetaStoneMetrics.JobsAccepted.Add(1);
        Emit(ProgressKind.Accepted);
        StartRun();
        logger.LogInformation("job {Job} accepted: k = {K} on silo {Silo}", JobId, k, silo.Name);
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
        return Task.FromResult(_result);
    }

    public Task<JobStatus> GetStatusAsync()
    {
        EnsureKnown();
        return Task.FromResult(Status());
    }

    public async Task<ProgressPage> GetProgressAsync(string? runId, int afterSequence, TimeSpan maxWait, CancellationToken cancellationToken)
    {
        EnsureKnown();
        if (runId != _runId) afterSequence = -1; // a new coordinator run numbers its events afresh
        if (!_events.Any(e => e.Sequence > afterSequence) && _state == JobState.Running)
        {
            var wait = maxWait > TimeSpan.FromSeconds(30) ? TimeSpan.FromSeconds(30) : maxWait;
            try { await _changed.Task.WaitAsync(wait, cancellationToken); }
            catch (TimeoutException) { }
        }
        return new ProgressPage(_runId, _events.Where(e => e.Sequence > afterSequence).ToList());
    }

    public async Task<JobStatus> CancelAsync(string reason)
    {
        EnsureKnown();
        if (_state != JobState.Running) return Status();
        _state = JobState.Cancelled;
        _error = string.IsNullOrWhiteSpace(reason) ? "cancelled by the client" : reason;
        _stop.Cancel(); // flows to every candidate call, and from there to the replica and the engine
        // Token propagation is best effort; tell the unfinished candidates directly as well.
        var unfinished = Enumerable.Range(0, _k).Where(i => !_candidates.ContainsKey(i))
            .Select(i => GrainFactory.GetGrain<ICandidateGrain>(CandidateKey(i)).CancelAsync());
        try { await Task.WhenAll(unfinished); }
        catch (Exception e) { logger.LogWarning("job {Job}: telling candidates to stop failed: {Error}", JobId, e.Message); }
        await store.EndAsync(JobId, JobState.Cancelled, _error);
        Emit(ProgressKind.Cancelled, message: _error);
        _completion.TrySetException(new OperationCanceledException($"job {JobId} was cancelled: {_error}"));
        return Status();
    }

    public Task ResumeAsync()
    {
        // Activation already restored and restarted a running job; a job this silo never heard of has nothing to resume.
        if (_request is null) DeactivateOnIdle();
        return Task.CompletedTask;
    }

    private void Restore(StoredJob job)
    {
        _request = job.Request;
        _k = job.K;
        _selection = JobRequestRules.Validate(job.Request).Selection;
        _createdAt = job.CreatedAt;
        _state = job.State;
        _error = job.Error;
        _result = job.Result;
        _runs = job.Runs;
        foreach (var (index, candidate) in job.Candidates) _candidates[index] = candidate;
        Emit(ProgressKind.Accepted);
        foreach (var candidate in _candidates.Values.OrderBy(c => c.Index))
            Emit(ProgressKind.CandidateFinished, candidate.Index, candidate.Score, candidate.Replica);
        switch (_state)
        {
            case JobState.Running:
                logger.LogWarning("job {Job}: resuming on silo {Silo} with {Done}/{K} candidates already stored", JobId, silo.Name, _candidates.Count, _k);
                StartRun();
                break;
            case JobState.Completed when _result is not null:
                Emit(ProgressKind.Completed);
                _completion.TrySetResult(_result);
                break;
            case JobState.Cancelled:
                Emit(ProgressKind.Cancelled, message: _error);
                _completion.TrySetException(new OperationCanceledException($"job {JobId} was cancelled: {_error}"));
                break;
            default:
                Emit(ProgressKind.Failed, message: _error);
                _completion.TrySetException(new InvalidOperationException($"job {JobId} failed: {_error}"));
                break;
        }
    }

    private async Task CheckPromptAsync(JobRequest request)
    {
        var registry = GrainFactory.GetGrain<IReplicaRegistryGrain>(0);
        for (int attempt = 0; ; attempt++)
        {
            string replica = await registry.AnyReplicaAsync();
            try
            {
                await GrainFactory.GetGrain<IReplicaGrain>(replica).CheckPromptAsync(request);
                return;
            }
            catch (Exception e) when (ClusterFaults.IsSiloLoss(e) && attempt < 5)
            {
                await registry.ForgetAsync(replica);
            }
        }
    }

    private void StartRun()
    {
        if (_run is not null) return;
        _leaseTimer = this.RegisterGrainTimer(RenewLeaseAsync, new GrainTimerCreationOptions(TimeSpan.Zero, LeaseTime / 3) { Interleave = true });
        _run = RunAsync();
    }

    private Task RenewLeaseAsync(CancellationToken cancellationToken)
    {
        // A job in flight keeps its coordinator (candidate replies are not "activity" until they arrive); the
        // timer stops with the job, and the activation is then collected when idle like any other.
        DelayDeactivation(LeaseTime * 3);
        return store.RenewLeaseAsync(JobId, silo.Name, LeaseTime);
    }

    private async Task RunAsync()
    {
        try
        {
            _runs = await store.StartRunAsync(JobId);
            var missing = Enumerable.Range(0, _k).Where(i => !_candidates.ContainsKey(i)).ToList();
            await Task.WhenAll(missing.Select(i => RunCandidateAsync(i, _stop.Token)));
            if (_state != JobState.Running) return;
            var ordered = _candidates.Values.OrderBy(c => c.Index).ToList();
            int position = CandidateSelection.SelectWinner(ordered.Select(c => new ScoredCandidate(c.Index, c.Score, c.Answer)).ToList(), _selection);
            var result = new JobResult
            {
                JobId = JobId,
                Request = _request!,
                K = _k,
                Selection = JobRequestRules.SelectionName(_selection),
                WinnerIndex = ordered[position].Index,
                Candidates = ordered,
                ElapsedSeconds = (DateTimeOffset.UtcNow - _createdAt).TotalSeconds,
                CoordinatorRuns = _runs,
            };
            await store.CompleteAsync(result);
            (_result, _state) = (result, JobState.Completed);
            MetaStoneMetrics.JobCompleted(_request!, _k, result.ElapsedSeconds);
            Emit(ProgressKind.Completed);
            _completion.TrySetResult(result);
            logger.LogInformation("job {Job} completed: winner {Winner} score {Score:F4}", JobId, result.WinnerIndex, result.Winner.Score);
        }
        catch (Exception) when (_state == JobState.Cancelled)
        {
            // CancelAsync recorded the outcome.
        }
        catch (InvalidOperationException e) when (e.Message.StartsWith("Attempt to access an invalid activation", StringComparison.Ordinal))
        {
            // Orleans invalidated this activation mid-run (after a silo loss two activations of the job's coordinator can exist
            // for a moment, and one is dropped). The job is not failed: it stays running in the store, the surviving activation
            // or the recovery sweep continues it, and waiting clients retry and reach that one (a transient fault for them).
            logger.LogWarning("job {Job}: this coordinator activation was invalidated while it ran; the job continues on the surviving one", JobId);
            _completion.TrySetException(new CoordinatorReplacedException($"the coordinator of job {JobId} was replaced while it ran; ask again"));
        }
        catch (Exception e)
        {
            _state = JobState.Failed;
            _error = e.Message;
            MetaStoneMetrics.JobsFailed.Add(1);
            logger.LogError(e, "job {Job} failed", JobId);
            try { await store.EndAsync(JobId, JobState.Failed, _error); }
            catch (Exception s) { logger.LogError(s, "job {Job}: recording the failure failed", JobId); }
            Emit(ProgressKind.Failed, message: _error);
            _completion.TrySetException(new InvalidOperationException($"job {JobId} failed: {_error}"));
        }
        finally
        {
            _leaseTimer?.Dispose();
        }
    }

    private async Task RunCandidateAsync(int index, CancellationToken cancellationToken)
    {
        Emit(ProgressKind.CandidateStarted, index);
        var work = new CandidateWork(JobId, index, _request!.Seed + index, _request);
        CandidateResult candidate;
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                candidate = await GrainFactory.GetGrain<ICandidateGrain>(CandidateKey(index)).GenerateAsync(work, cancellationToken);
                break;
            }
            catch (Exception e) when (ClusterFaults.IsSiloLoss(e) && !cancellationToken.IsCancellationRequested && attempt < CandidateCallAttempts)
            {
                // The candidate grain's silo died: the next call activates it on a survivor, same seed.
                logger.LogWarning("job {Job}: candidate {Index} lost ({Error}), reissuing", JobId, index, e.GetType().Name);
                await Task.Delay(TimeSpan.FromMilliseconds(200 * attempt), cancellationToken);
            }
        }
        if (_state != JobState.Running || !_candidates.TryAdd(index, candidate)) return;
        await store.SaveCandidateAsync(JobId, candidate);
        Emit(ProgressKind.CandidateFinished, index, candidate.Score, candidate.Replica);
    }

    private string CandidateKey(int index) => $"{JobId}/{index}";

    private void EnsureKnown()
    {
        if (_request is not null) return;
        DeactivateOnIdle();
        throw new KeyNotFoundException($"unknown job id '{JobId}'");
    }

    private (int? Index, double? Score) Best()
    {
        CandidateResult? best = null;
        foreach (var c in _candidates.Values)
            if (best is null || c.Score > best.Score || (c.Score == best.Score && c.Index < best.Index)) best = c;
        return (best?.Index, best?.Score);
    }

    private JobStatus Status()
    {
        var (bestIndex, bestScore) = _result is not null ? (_result.WinnerIndex, _result.Winner.Score) : Best();
        return new JobStatus
        {
            JobId = JobId, State = _state, K = _k, Finished = _candidates.Count, BestIndex = bestIndex, BestScore = bestScore,
            Error = _error, CreatedAt = _createdAt, CoordinatorSilo = silo.Name,
        };
    }

    private void Emit(ProgressKind kind, int? index = null, double? score = null, string? replica = null, string? message = null)
    {
        var (bestIndex, bestScore) = kind == ProgressKind.Completed && _result is not null ? (_result.WinnerIndex, _result.Winner.Score) : Best();
        _events.Add(new ProgressEvent
        {
            Sequence = _events.Count, Kind = kind, CandidateIndex = index, Score = score, Replica = replica,
            Finished = _candidates.Count, K = _k, BestIndex = bestIndex, BestScore = bestScore, Message = message,
        });
        var changed = _changed;
        _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        changed.TrySetResult();
    }
}
