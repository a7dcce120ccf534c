using System.Diagnostics;
using MetaStone.Contracts;
using MetaStone.Reasoning;
using Microsoft.Extensions.Logging;
using Orleans.Runtime;

namespace MetaStone.Grains.Sweeps;

/// <summary>
/// Runs one scaling-law sweep (key = sweep id): every item (problem × thinking budget) is a coordinator job of
/// k_max candidates, at most <see cref="SweepRequest.MaxConcurrentItems"/> at once, so the candidates spread over
/// every replica of the cluster by load. Each finished item is graded and persisted before it counts; an
/// activation that finds a running sweep in the store (its silo died) or a restart of the same sweep runs only
/// the items not yet persisted, and their jobs keep their ids, so candidates already stored are not generated again.
/// </summary>
[Reentrant]
public sealed class SweepGrain(ISweepStore store, ILocalSiloDetails silo, ILogger<SweepGrain> logger) : Grain, ISweepGrain
{
    public static readonly TimeSpan LeaseTime = TimeSpan.FromSeconds(6);
    /// <summary>Jobs tried per item (a failed job is retried under a new id) before the sweep fails.</summary>
    public const int ItemAttempts = 3;

    private readonly SortedDictionary<int, SweepItemResult> _items = [];
    /// <summary>Item → the job id it runs as now; its count is the number of items running.</summary>
    private readonly Dictionary<int, string> _runningJobs = [];
    private SweepRequest? _request;
    private ModelInfo? _model;
    private SweepState _state;
    private string? _error;
    private DateTimeOffset _createdAt;
    private int _runs;
    private int _finishedThisRun;
    private Stopwatch _runClock = new();
    private CancellationTokenSource _stop = new();
    private Task? _run;
    private IGrainTimer? _leaseTimer;
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private string SweepId => this.GetPrimaryKeyString();

    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        if (await store.LoadAsync(SweepId) is { } stored)
        {
            Restore(stored);
            if (_state == SweepState.Running)
            {
                logger.LogWarning("sweep {Sweep}: resuming on silo {Silo} with {Done}/{Total} items already stored", SweepId, silo.Name, _items.Count, _request!.ItemCount);
                StartRun();
            }
        }
    }

    public async Task<SweepStatus> StartAsync(SweepRequest request)
    {
        SweepRules.Validate(request);
        if (_request is not null)
        {
            if (!SweepRules.SameSweep(request, _request))
                throw new ArgumentException($"sweep '{SweepId}' exists with different settings; choose another --id or repeat its exact settings to resume it");
            if (_state != SweepState.Completed)
            {
                // Resuming with another model would mix two models' candidates in one sweep.
                var serving = await DescribeModelAsync();
                if (_model is not null && (serving.Name, serving.PolicyParameters, serving.HiddenSize) != (_model.Name, _model.PolicyParameters, _model.HiddenSize))
                    throw new ArgumentException($"sweep '{SweepId}' measured model {_model.Name} ({_model.PolicyParameters:N0} parameters) but the cluster now serves {serving.Name} ({serving.PolicyParameters:N0}); start a new sweep with another --id");
            }
            if (_state is SweepState.Failed or SweepState.Cancelled && _run is null or { IsCompleted: true })
            {
                logger.LogInformation("sweep {Sweep}: restarted after it {State}", SweepId, _state);
                _state = SweepState.Running;
                _error = null;
                _run = null;
                _stop = new CancellationTokenSource();
                StartRun();
            }
            return Status();
        }
        await CheckPromptsAsync(request);
        var model = await DescribeModelAsync();
        var createdAt = DateTimeOffset.UtcNow;
        if (!await store.CreateAsync(SweepId, request, model, createdAt))
        {
            // Another activation created it first (a failover race); take its record.
            Restore(await store.LoadAsync(SweepId) ?? throw new InvalidOperationException($"sweep {SweepId} vanished from the store"));
            return await StartAsync(request);
        }
        (_request, _model, _createdAt, _state) = (request, model, createdAt, SweepState.Running);
        logger.LogInformation("sweep {Sweep} accepted: {Items} items × {K} candidates on silo {Silo}", SweepId, request.ItemCount, request.KMax, silo.Name);
        StartRun();
        return Status();
    }

    public Task<SweepStatus> GetStatusAsync()
    {
        EnsureKnown();
        return Task.FromResult(Status());
    }

    public async Task<SweepStatus> WaitForProgressAsync(int afterFinished, TimeSpan maxWait, CancellationToken cancellationToken)
    {
        EnsureKnown();
        if (_items.Count <= afterFinished && _state == SweepState.Running)
        {
            var wait = maxWait > TimeSpan.FromSeconds(30) ? TimeSpan.FromSeconds(30) : maxWait;
            try { await _changed.Task.WaitAsync(wait, cancellationToken); }
            catch (TimeoutException) { }
        }
        return Status();
    }

    public Task<SweepRequest> GetRequestAsync()
    {
        EnsureKnown();
        return Task.FromResult(_request!);
    }

    public Task<IReadOnlyList<SweepItemResult>> GetItemsAsync(int offset, int count)
    {
        EnsureKnown();
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        return Task.FromResult<IReadOnlyList<SweepItemResult>>(_items.Values.Skip(offset).Take(count).ToList());
    }

    public async Task<SweepStatus> CancelAsync(string reason)
    {
        EnsureKnown();
        if (_state != SweepState.Running) return Status();
        _state = SweepState.Cancelled;
        _error = string.IsNullOrWhiteSpace(reason) ? "cancelled by the client" : reason;
        _stop.Cancel();
        var jobs = _runningJobs.Values.ToList();
        try { await Task.WhenAll(jobs.Select(j => GrainFactory.GetGrain<ICoordinatorGrain>(j).CancelAsync($"sweep {SweepId} cancelled"))); }
        catch (Exception e) { logger.LogWarning("sweep {Sweep}: cancelling its running jobs failed: {Error}", SweepId, e.Message); }
        await store.EndAsync(SweepId, SweepState.Cancelled, _error);
        Signal();
        return Status();
    }

    public Task ResumeAsync()
    {
        // Activation restored and restarted a running sweep; one this silo never heard of has nothing to resume.
        if (_request is null) DeactivateOnIdle();
        return Task.CompletedTask;
    }

    private void Restore(StoredSweep stored)
    {
        _request = stored.Request;
        _model = stored.Model;
        _state = stored.State;
        _error = stored.Error;
        _createdAt = stored.CreatedAt;
        _runs = stored.Runs;
        foreach (var (index, item) in stored.Items) _items[index] = item;
    }

    private async Task CheckPromptsAsync(SweepRequest request)
    {
        // Every prompt must fit the context: a bad row is refused now, not discovered hours into the sweep.
        var replica = await AnyReplicaAsync();
        for (int i = 0; i < request.Problems.Count; i++)
        {
            try { await GrainFactory.GetGrain<IReplicaGrain>(replica).CheckPromptAsync(new JobRequest { Prompt = request.Problems[i].Prompt }); }
            catch (ArgumentException e) { throw new ArgumentException($"problem {i}: {e.Message}"); }
        }
    }

    private async Task<ModelInfo> DescribeModelAsync() =>
        await GrainFactory.GetGrain<IReplicaGrain>(await AnyReplicaAsync()).DescribeModelAsync();

    // A sweep is often started right after its silos: it waits 10 s for a replica, twice a single job's patience.
    private Task<string> AnyReplicaAsync() => GrainFactory.GetGrain<IReplicaRegistryGrain>(0).AnyReplicaAsync(attempts: 40);

    private void StartRun()
    {
        if (_run is not null) return;
        _leaseTimer ??= this.RegisterGrainTimer(RenewLeaseAsync, new GrainTimerCreationOptions(TimeSpan.Zero, LeaseTime / 3) { Interleave = true });
        _run = RunAsync();
    }

    private Task RenewLeaseAsync(CancellationToken cancellationToken)
    {
        if (_state != SweepState.Running) return Task.CompletedTask;
        DelayDeactivation(LeaseTime * 3);
        return store.RenewLeaseAsync(SweepId, silo.Name, LeaseTime);
    }

    private async Task RunAsync()
    {
        var request = _request!;
        try
        {
            _runs = await store.StartRunAsync(SweepId);
            _runClock = Stopwatch.StartNew();
            _finishedThisRun = 0;
            var missing = Enumerable.Range(0, request.ItemCount).Where(i => !_items.ContainsKey(i)).ToList();
            int concurrency = request.MaxConcurrentItems > 0 ? request.MaxConcurrentItems
                : SweepRules.AutoConcurrency((await GrainFactory.GetGrain<IReplicaRegistryGrain>(0).ListAsync()).Sum(r => r.Slots), request.KMax);
            logger.LogInformation("sweep {Sweep}: run {Run}, {Missing} items to go, {Concurrency} at once", SweepId, _runs, missing.Count, concurrency);
            using var gate = new SemaphoreSlim(concurrency);
            var token = _stop.Token;
            Exception? firstError = null;
            await Task.WhenAll(missing.Select(async item =>
            {
                try { await gate.WaitAsync(token); }
                catch (OperationCanceledException) { return; }
                try { await RunItemAsync(item, token); }
                catch (OperationCanceledException) when (token.IsCancellationRequested) { }
                catch (Exception e)
                {
                    // One item that cannot be done stops the sweep at once; what finished is stored and a restart resumes.
                    firstError ??= e;
                    _stop.Cancel();
                }
                finally { gate.Release(); }
            }));
            if (_state == SweepState.Running && firstError is not null)
                throw new InvalidOperationException($"item failed: {firstError.Message}", firstError);
            if (_state != SweepState.Running) return;
            await store.EndAsync(SweepId, SweepState.Completed, null);
            _state = SweepState.Completed;
            logger.LogInformation("sweep {Sweep} completed: {Items} items in {Seconds:F0} s", SweepId, _items.Count, _runClock.Elapsed.TotalSeconds);
        }
        catch (Exception) when (_state != SweepState.Running)
        {
            // Cancelled: CancelAsync recorded the outcome.
        }
        catch (Exception e)
        {
            _state = SweepState.Failed;
            _error = e.Message;
            logger.LogError(e, "sweep {Sweep} failed", SweepId);
            try { await store.EndAsync(SweepId, SweepState.Failed, _error); }
            catch (Exception s) { logger.LogError(s, "sweep {Sweep}: recording the failure failed", SweepId); }
        }
        finally
        {
            _runningJobs.Clear();
            Signal();
        }
    }

    private async Task RunItemAsync(int item, CancellationToken cancellationToken)
    {
        var request = _request!;
        var (problem, budgetIndex) = SweepRules.ItemOf(request, item);
        var job = SweepRules.JobOf(request, item);
        var clock = Stopwatch.StartNew();
        JobResult result;
        for (int attempt = 1; ; attempt++)
        {
            // The first attempt's id is the same in every run: a resumed sweep re-joins the job and its stored candidates.
            string jobId = SweepRules.JobId(SweepId, request, item) + (attempt == 1 ? "" : $"~retry{_runs}.{attempt}");
            _runningJobs[item] = jobId;
            if (attempt == 1) Signal();
            try
            {
                result = await RunJobAsync(jobId, job, cancellationToken);
                break;
            }
            catch (Exception e) when (!cancellationToken.IsCancellationRequested && attempt < ItemAttempts && e is InvalidOperationException or OperationCanceledException)
            {
                logger.LogWarning("sweep {Sweep}: item {Item} (job {Job}) failed: {Error}; retrying", SweepId, item, jobId, e.Message);
            }
        }
        string answer = request.Problems[problem].Answer;
        var candidates = result.Candidates.OrderBy(c => c.Index).Select(c => new SweepCandidate(
            c.Score, c.Answer, AnswerGrader.IsCorrect(c.Text, answer), c.ThinkingTokens, c.StepScores.Length, c.FinishReason)).ToList();
        var finished = new SweepItemResult
        {
            Item = item, Problem = problem, Budget = request.Budgets[budgetIndex], JobId = result.JobId, Candidates = candidates,
            Seconds = clock.Elapsed.TotalSeconds,
        };
        if (_state != SweepState.Running) return;
        await store.SaveItemAsync(SweepId, finished);
        _items[item] = finished;
        _finishedThisRun++;
        _runningJobs.Remove(item);
        Signal();
    }

    private async Task<JobResult> RunJobAsync(string jobId, JobRequest job, CancellationToken cancellationToken)
    {
        var coordinator = GrainFactory.GetGrain<ICoordinatorGrain>(jobId);
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                await coordinator.SubmitAsync(job);
                return await coordinator.AwaitResultAsync(cancellationToken);
            }
            catch (Exception e) when (ClusterFaults.IsSiloLoss(e) && !cancellationToken.IsCancellationRequested && attempt < 10)
            {
                // The job's coordinator silo died: submitting again activates it elsewhere, where it resumes from the store.
                await Task.Delay(TimeSpan.FromMilliseconds(250 * attempt), cancellationToken);
            }
        }
    }

    private void EnsureKnown()
    {
        if (_request is not null) return;
        DeactivateOnIdle();
        throw new KeyNotFoundException($"unknown sweep id '{SweepId}'");
    }

    private SweepStatus Status()
    {
        int total = _request?.ItemCount ?? 0;
        double runSeconds = _runClock.Elapsed.TotalSeconds;
        double? eta = _state == SweepState.Running && _finishedThisRun > 0
            ? runSeconds / _finishedThisRun * (total - _items.Count)
            : null;
        return new SweepStatus
        {
            SweepId = SweepId, State = _state, TotalItems = total, FinishedItems = _items.Count, RunningItems = _runningJobs.Count,
            FinishedThisRun = _finishedThisRun, RunSeconds = runSeconds, EtaSeconds = eta, CandidatesPerItem = _request?.KMax ?? 0,
            Error = _error, CreatedAt = _createdAt, Silo = silo.Name, Runs = _runs, Model = _model,
            Problems = _request?.Problems.Count ?? 0,
            ProblemsFinished = _request is null ? 0 : _items.Keys.GroupBy(i => i / _request.Budgets.Count).Count(g => g.Count() == _request.Budgets.Count),
        };
    }

    private void Signal()
    {
        var changed = _changed;
        _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        changed.TrySetResult();
    }
}
