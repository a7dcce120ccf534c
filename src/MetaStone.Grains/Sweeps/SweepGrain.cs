using System.Diagnostics;
using MetaStone.Contracts;
using MetaStone.Reasoning;
using Microsoft.Extensions.Logging;
using MetaStone.Grains.Durability;
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
public sealed partial class SweepGrain(
    [PersistentState("sweep", StorageNames.Sweeps)] IPersistentState<SweepRecord> record,
    RedisOutagePolicy outage, DurabilityOptions durability, ILocalSiloDetails silo, ILogger<SweepGrain> logger) : RecoverableRunGrain(durability, logger), ISweepGrain
{
    private readonly DurableState<SweepRecord> _record = new(record, outage);
    /// <summary>Item → the job id it runs as now; its count is the number of items running.</summary>
    private readonly Dictionary<int, string> _runningJobs = [];
    private int _finishedThisRun;
    private Stopwatch _runClock = new();
    private CancellationTokenSource _stop = new();

    private SweepRecord Sweep => _record.Value;
    protected override string Kind => "sweep";
    protected override bool IsKnown => _record.Exists;
    protected override bool IsRunning => Sweep.State == SweepState.Running;

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        if (IsKnown && IsRunning)
        {
            LogResuming(logger, Id, silo.Name, Sweep.Items.Count, Sweep.Request!.ItemCount);
            StartRun();
        }
        return Task.CompletedTask;
    }

    public async Task<SweepStatus> StartAsync(SweepRequest request)
    {
        SweepRules.Validate(request);
        if (IsKnown)
        {
            if (!SweepRules.SameSweep(request, Sweep.Request!))
                throw new ArgumentException($"sweep '{Id}' exists with different settings; choose another --id or repeat its exact settings to resume it");
            if (Sweep.State != SweepState.Completed)
            {
                // Resuming with another model would mix two models' candidates in one sweep.
                var serving = await DescribeModelAsync();
                if (Sweep.Model is { } model && (serving.Name, serving.PolicyParameters, serving.HiddenSize) != (model.Name, model.PolicyParameters, model.HiddenSize))
                    throw new ArgumentException($"sweep '{Id}' measured model {model.Name} ({model.PolicyParameters:N0} parameters) but the cluster now serves {serving.Name} ({serving.PolicyParameters:N0}); start a new sweep with another --id");
            }
            if (Sweep.State is SweepState.Failed or SweepState.Cancelled)
            {
                LogRestarted(logger, Id, Sweep.State);
                (Sweep.State, Sweep.Error) = (SweepState.Running, null);
                await _record.WriteAsync($"restarting sweep {Id}");
                await KeepRecoverableAsync();
                _stop = new CancellationTokenSource();
            }
            if (IsRunning) StartRun();
            return Status();
        }
        await CheckPromptsAsync(request);
        var serving2 = await DescribeModelAsync();
        (Sweep.Request, Sweep.Model, Sweep.CreatedAt, Sweep.State) = (request, serving2, DateTimeOffset.UtcNow, SweepState.Running);
        await _record.WriteAsync($"accepting sweep {Id}");
        await KeepRecoverableAsync();
        LogAccepted(logger, Id, request.ItemCount, request.KMax, silo.Name);
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
        if (Sweep.Items.Count <= afterFinished && IsRunning) await WaitForChangeAsync(maxWait, cancellationToken);
        return Status();
    }

    public Task<SweepRequest> GetRequestAsync()
    {
        EnsureKnown();
        return Task.FromResult(Sweep.Request!);
    }

    public Task<IReadOnlyList<SweepItemResult>> GetItemsAsync(int offset, int count)
    {
        EnsureKnown();
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        return Task.FromResult<IReadOnlyList<SweepItemResult>>(Sweep.Items.OrderBy(i => i.Key).Skip(offset).Take(count).Select(i => i.Value).ToList());
    }

    public async Task<SweepStatus> CancelAsync(string reason)
    {
        EnsureKnown();
        if (!IsRunning) return Status();
        Sweep.State = SweepState.Cancelled;
        Sweep.Error = string.IsNullOrWhiteSpace(reason) ? "cancelled by the client" : reason;
        _stop.Cancel();
        var jobs = _runningJobs.Values.ToList();
        try { await Task.WhenAll(jobs.Select(j => GrainFactory.GetGrain<ICoordinatorGrain>(j).CancelAsync($"sweep {Id} cancelled"))); }
        catch (Exception e) { LogCancellingJobsFailed(logger, Id, e.Message); }
        await _record.WriteAsync($"cancelling sweep {Id}");
        Signal();
        return Status();
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
    private Task<string> AnyReplicaAsync() => GrainFactory.GetGrain<IReplicaRegistryGrain>(0).AnyReplicaAsync(ClusterRetries.SweepReplicaListed);

    protected override async Task RunAsync()
    {
        var request = Sweep.Request!;
        try
        {
            Sweep.Runs++;
            await _record.WriteAsync($"starting a run of sweep {Id}");
            _runClock = Stopwatch.StartNew();
            _finishedThisRun = 0;
            var missing = Enumerable.Range(0, request.ItemCount).Where(i => !Sweep.Items.ContainsKey(i)).ToList();
            int concurrency = request.MaxConcurrentItems > 0 ? request.MaxConcurrentItems
                : SweepRules.AutoConcurrency((await GrainFactory.GetGrain<IReplicaRegistryGrain>(0).ListAsync()).Sum(r => r.Slots), request.KMax);
            LogRun(logger, Id, Sweep.Runs, missing.Count, concurrency);
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
            if (firstError is ActivationReplacedException) throw firstError;
            if (IsRunning && firstError is not null)
                throw new InvalidOperationException($"item failed: {firstError.Message}", firstError);
            if (!IsRunning) return;
            Sweep.State = SweepState.Completed;
            await _record.WriteAsync($"completing sweep {Id}");
            LogCompleted(logger, Id, Sweep.Items.Count, _runClock.Elapsed.TotalSeconds);
        }
        catch (Exception) when (!IsRunning && Sweep.State == SweepState.Cancelled)
        {
            // Cancelled: CancelAsync recorded the outcome.
        }
        catch (ActivationReplacedException)
        {
            // Another activation took over the record after a silo loss; it runs the sweep.
            LogReplaced(logger, Id);
            DeactivateOnIdle();
        }
        catch (Exception e)
        {
            Sweep.State = SweepState.Failed;
            Sweep.Error = e.Message;
            LogFailed(logger, e, Id);
            try { await _record.WriteAsync($"recording the failure of sweep {Id}"); }
            catch (Exception s) { LogRecordingFailureFailed(logger, s, Id); }
        }
        finally
        {
            _runningJobs.Clear();
        }
    }

    private async Task RunItemAsync(int item, CancellationToken cancellationToken)
    {
        var request = Sweep.Request!;
        var (problem, budgetIndex) = SweepRules.ItemOf(request, item);
        var job = SweepRules.JobOf(request, item);
        var clock = Stopwatch.StartNew();
        string jobId = "";
        var result = await ClusterRetries.SweepItem.ExecuteAsync((attempt, token) =>
        {
            // The first attempt's id is the same in every run: a resumed sweep re-joins the job and its stored candidates.
            jobId = SweepRules.JobId(Id, request, item) + (attempt == 1 ? "" : $"~retry{Sweep.Runs}.{attempt}");
            _runningJobs[item] = jobId;
            if (attempt == 1) Signal();
            return RunJobAsync(jobId, job, token);
        }, cancellationToken, onRetry: failed =>
        {
            LogItemRetrying(logger, Id, item, jobId, failed.Failure.Message);
            return ValueTask.CompletedTask;
        });
        string answer = request.Problems[problem].Answer;
        var candidates = result.Candidates.OrderBy(c => c.Index).Select(c => new SweepCandidate(
            c.Score, c.Answer, AnswerGrader.IsCorrect(c.Text, answer), c.ThinkingTokens, c.StepScores.Length, c.FinishReason)).ToList();
        var finished = new SweepItemResult
        {
            Item = item, Problem = problem, Budget = request.Budgets[budgetIndex], JobId = result.JobId, Candidates = candidates,
            Seconds = clock.Elapsed.TotalSeconds,
        };
        if (!IsRunning) return;
        Sweep.Items[item] = finished;
        await _record.WriteAsync($"storing item {item} of sweep {Id}");
        _finishedThisRun++;
        _runningJobs.Remove(item);
        Signal();
    }

    private async Task<JobResult> RunJobAsync(string jobId, JobRequest job, CancellationToken cancellationToken)
    {
        var coordinator = GrainFactory.GetGrain<ICoordinatorGrain>(jobId);
        // The job's coordinator silo died: submitting again activates it elsewhere, where it resumes from its record.
        return await ClusterRetries.SweepJob.ExecuteAsync(async (_, token) =>
        {
            await coordinator.SubmitAsync(job);
            return await coordinator.AwaitResultAsync(token);
        }, cancellationToken);
    }

    private SweepStatus Status()
    {
        var request = Sweep.Request;
        int total = request?.ItemCount ?? 0;
        double runSeconds = _runClock.Elapsed.TotalSeconds;
        double? eta = IsRunning && _finishedThisRun > 0
            ? runSeconds / _finishedThisRun * (total - Sweep.Items.Count)
            : null;
        return new SweepStatus
        {
            SweepId = Id, State = Sweep.State, TotalItems = total, FinishedItems = Sweep.Items.Count, RunningItems = _runningJobs.Count,
            FinishedThisRun = _finishedThisRun, RunSeconds = runSeconds, EtaSeconds = eta, CandidatesPerItem = request?.KMax ?? 0,
            Error = Sweep.Error, CreatedAt = Sweep.CreatedAt, Silo = silo.Name, Runs = Sweep.Runs, Model = Sweep.Model,
            Problems = request?.Problems.Count ?? 0,
            ProblemsFinished = request is null ? 0 : Sweep.Items.Keys.GroupBy(i => i / request.Budgets.Count).Count(g => g.Count() == request.Budgets.Count),
        };
    }

    // Log events 1300–1399 (numbering in LogEventIds).
    [LoggerMessage(EventId = 1301, Level = LogLevel.Warning, Message = "sweep {Sweep}: resuming on silo {Silo} with {Done}/{Total} items already stored")]
    private static partial void LogResuming(ILogger logger, string sweep, string silo, int done, int total);

    [LoggerMessage(EventId = 1302, Level = LogLevel.Information, Message = "sweep {Sweep}: restarted after it {State}")]
    private static partial void LogRestarted(ILogger logger, string sweep, SweepState state);

    [LoggerMessage(EventId = 1303, Level = LogLevel.Information, Message = "sweep {Sweep} accepted: {Items} items × {K} candidates on silo {Silo}")]
    private static partial void LogAccepted(ILogger logger, string sweep, int items, int k, string silo);

    [LoggerMessage(EventId = 1304, Level = LogLevel.Warning, Message = "sweep {Sweep}: cancelling its running jobs failed: {Error}")]
    private static partial void LogCancellingJobsFailed(ILogger logger, string sweep, string error);

    [LoggerMessage(EventId = 1305, Level = LogLevel.Information, Message = "sweep {Sweep}: run {Run}, {Missing} items to go, {Concurrency} at once")]
    private static partial void LogRun(ILogger logger, string sweep, int run, int missing, int concurrency);

    [LoggerMessage(EventId = 1306, Level = LogLevel.Information, Message = "sweep {Sweep} completed: {Items} items in {Seconds:F0} s")]
    private static partial void LogCompleted(ILogger logger, string sweep, int items, double seconds);

    [LoggerMessage(EventId = 1307, Level = LogLevel.Warning, Message = "sweep {Sweep}: this activation was replaced while it ran; the sweep continues on the surviving one")]
    private static partial void LogReplaced(ILogger logger, string sweep);

    [LoggerMessage(EventId = 1308, Level = LogLevel.Error, Message = "sweep {Sweep} failed")]
    private static partial void LogFailed(ILogger logger, Exception exception, string sweep);

    [LoggerMessage(EventId = 1309, Level = LogLevel.Error, Message = "sweep {Sweep}: recording the failure failed")]
    private static partial void LogRecordingFailureFailed(ILogger logger, Exception exception, string sweep);

    [LoggerMessage(EventId = 1310, Level = LogLevel.Warning, Message = "sweep {Sweep}: item {Item} (job {Job}) failed: {Error}; retrying")]
    private static partial void LogItemRetrying(ILogger logger, string sweep, int item, string job, string error);
}
