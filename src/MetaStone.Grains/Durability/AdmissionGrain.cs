using MetaStone.Contracts;
using Microsoft.Extensions.Logging;
using Orleans.Runtime;

namespace MetaStone.Grains.Durability;

/// <summary>
/// Admission control (key 0): the running jobs of the cluster in one persisted record. Not reentrant, so "count, then
/// add" is atomic; every admission and release is written before it is answered, so the bound survives the loss of this
/// grain's silo (the next call activates it elsewhere from the record).
/// </summary>
/// <remarks>
/// A job id can be left behind when its coordinator's silo dies between admitting the job and writing the job's record,
/// and the client gives up (a retried submit re-admits the same id, which is idempotent). Every
/// <see cref="ReconcilePeriod"/> the entries older than that period are checked against their coordinators, and jobs
/// that ended or were never recorded are released.
/// </remarks>
public sealed partial class AdmissionGrain(
    [PersistentState("admission", StorageNames.Jobs)] IPersistentState<AdmissionRecord> record,
    RedisOutagePolicy outage, ILogger<AdmissionGrain> logger) : Grain, IAdmissionGrain
{
    public static readonly TimeSpan ReconcilePeriod = TimeSpan.FromSeconds(30);
    private readonly DurableState<AdmissionRecord> _record = new(record, outage);

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        this.RegisterGrainTimer(ReconcileAsync, new GrainTimerCreationOptions(ReconcilePeriod, ReconcilePeriod));
        return Task.CompletedTask;
    }

    public async Task<bool> TryAdmitAsync(string jobId, int limit)
    {
        var running = _record.Value.Running;
        if (running.ContainsKey(jobId)) return true;
        if (limit > 0 && running.Count >= limit)
        {
            _record.Value.Refused++;
            MetaStoneMetrics.JobsRefused.Add(1);
            await _record.WriteAsync("counting a refused job");
            return false;
        }
        running[jobId] = DateTimeOffset.UtcNow;
        await _record.WriteAsync($"admitting job {jobId}");
        return true;
    }

    public async Task ReleaseAsync(string jobId)
    {
        if (!_record.Value.Running.Remove(jobId)) return;
        await _record.WriteAsync($"releasing job {jobId}");
    }

    public Task<AdmissionSnapshot> GetSnapshotAsync() => Task.FromResult(new AdmissionSnapshot
    {
        RunningJobs = _record.Value.Running.Keys.Order(StringComparer.Ordinal).ToList(), Refused = _record.Value.Refused,
    });

    private async Task ReconcileAsync(CancellationToken cancellationToken)
    {
        var old = _record.Value.Running.Where(e => DateTimeOffset.UtcNow - e.Value > ReconcilePeriod).Select(e => e.Key).ToList();
        var ended = new List<string>();
        foreach (var jobId in old)
        {
            try
            {
                var status = await GrainFactory.GetGrain<ICoordinatorGrain>(jobId).GetStatusAsync();
                if (status.State != JobState.Running) ended.Add(jobId);
            }
            catch (KeyNotFoundException) { ended.Add(jobId); }
            catch (Exception e) { LogCheckingJobFailed(logger, jobId, e.Message); }
        }
        if (ended.Count == 0) return;
        foreach (var jobId in ended) _record.Value.Running.Remove(jobId);
        LogReleasedEndedJobs(logger, ended.Count, string.Join(", ", ended));
        await _record.WriteAsync("releasing ended jobs");
    }

    // Log events 1400–1499 (numbering in LogEventIds).
    [LoggerMessage(EventId = 1401, Level = LogLevel.Debug, Message = "admission: checking job {Job} failed ({Error}); checked again later")]
    private static partial void LogCheckingJobFailed(ILogger logger, string job, string error);

    [LoggerMessage(EventId = 1402, Level = LogLevel.Warning, Message = "admission: released {Count} job(s) that had ended without releasing their place: {Jobs}")]
    private static partial void LogReleasedEndedJobs(ILogger logger, int count, string jobs);
}
