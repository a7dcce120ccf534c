using MetaStone.Contracts;

namespace MetaStone.Grains.Jobs;

public enum CreateOutcome { Created, Exists, Busy }

/// <summary>A job as stored: the accepted request, the candidates finished so far, and the outcome once it ended.</summary>
public sealed record StoredJob
{
    public required string JobId { get; init; }
    public required JobRequest Request { get; init; }
    public required int K { get; init; }
    public required JobState State { get; init; }
    public string? Error { get; init; }
    public required DateTimeOffset CreatedAt { get; init; }
    public required IReadOnlyDictionary<int, CandidateResult> Candidates { get; init; }
    public JobResult? Result { get; init; }
    /// <summary>Coordinator activations that have run the job.</summary>
    public int Runs { get; init; }
}

/// <summary>
/// Durable job records. Redis in a cluster (<see cref="RedisJobStore"/>); in memory for the embedded single-process
/// mode, where the jobs live exactly as long as the silo anyway.
/// </summary>
public interface IJobStore
{
    /// <summary>
    /// Records an accepted job, atomically with the admission check: with <paramref name="maxRunning"/> &gt; 0 and that
    /// many jobs running, nothing is stored, the rejection is counted and the answer is <see cref="CreateOutcome.Busy"/>.
    /// <see cref="CreateOutcome.Exists"/> when a job with this id already exists (submit is idempotent).
    /// </summary>
    Task<CreateOutcome> CreateAsync(string jobId, JobRequest request, int k, DateTimeOffset createdAt, int maxRunning = 0);
    /// <summary>Submissions refused because the cluster was at its running-job limit, since the store began.</summary>
    Task<long> RejectedBusyAsync();
    Task<StoredJob?> LoadAsync(string jobId);
    /// <summary>Counts one more coordinator run and returns the new count.</summary>
    Task<int> StartRunAsync(string jobId);
    Task SaveCandidateAsync(string jobId, CandidateResult candidate);
    /// <summary>
    /// Called by the replica the moment its engine finished a candidate: stores it under its job (so a candidate
    /// whose caller died meanwhile is not generated again) and counts one engine generation, atomically.
    /// </summary>
    Task RecordGeneratedAsync(string jobId, CandidateResult candidate);
    /// <summary>A stored candidate of a job, or null.</summary>
    Task<CandidateResult?> LoadCandidateAsync(string jobId, int index);
    /// <summary>Engine generations recorded by <see cref="RecordGeneratedAsync"/> since the store began: the count a resume test checks.</summary>
    Task<long> GeneratedCandidatesAsync();
    Task CompleteAsync(JobResult result);
    /// <summary>Marks the job failed or cancelled with a reason.</summary>
    Task EndAsync(string jobId, JobState state, string error);
    /// <summary>Jobs accepted and not yet ended.</summary>
    Task<IReadOnlyList<string>> RunningJobsAsync();
    /// <summary>Claims or renews "a live coordinator runs this job" for <paramref name="ttl"/>.</summary>
    Task RenewLeaseAsync(string jobId, string owner, TimeSpan ttl);
    Task<bool> HasLeaseAsync(string jobId);
}
