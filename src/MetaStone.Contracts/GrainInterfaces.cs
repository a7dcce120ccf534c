namespace MetaStone.Contracts;

/// <summary>
/// One job (key = job id): validates the request, fans out k <see cref="ICandidateGrain"/>s, gathers them, selects
/// the winner and persists the job as it goes (Orleans grain state). A new activation (after its silo died) resumes the job
/// from its record and regenerates only the candidates that are missing.
/// </summary>
[Alias("metastone.ICoordinatorGrain")]
public interface ICoordinatorGrain : IGrainWithStringKey
{
    /// <summary>Accepts the job (persisted before this returns) and starts it; throws <see cref="ArgumentException"/> for a bad request.</summary>
    [Alias("Submit")]
    Task<JobStatus> SubmitAsync(JobRequest request);

    /// <summary>Waits until the job ends and returns its result; throws if it failed or was cancelled.</summary>
    [Alias("AwaitResult"), ResponseTimeout("01:00:00")]
    Task<JobResult> AwaitResultAsync(CancellationToken cancellationToken = default);

    /// <summary>The result of a completed job, or null while it runs.</summary>
    [Alias("GetResult"), AlwaysInterleave]
    Task<JobResult?> GetResultAsync();

    [Alias("GetStatus"), AlwaysInterleave]
    Task<JobStatus> GetStatusAsync();

    /// <summary>Progress events after <paramref name="afterSequence"/>, waiting up to <paramref name="maxWait"/> for one.</summary>
    [Alias("GetProgress"), AlwaysInterleave, ResponseTimeout("00:01:00")]
    Task<ProgressPage> GetProgressAsync(string? runId, int afterSequence, TimeSpan maxWait, CancellationToken cancellationToken = default);

    /// <summary>Stops every running candidate (their batch slots are freed) and marks the job cancelled.</summary>
    [Alias("Cancel"), AlwaysInterleave]
    Task<JobStatus> CancelAsync(string reason);

}

/// <summary>
/// One candidate of a job (key = "{jobId}/{index}"): generates it on a replica chosen by load, retrying on another
/// replica with the same seed when a silo dies or a call times out. Idempotent by (job, index, seed).
/// </summary>
[Alias("metastone.ICandidateGrain")]
public interface ICandidateGrain : IGrainWithStringKey
{
    [Alias("Generate"), ResponseTimeout("01:00:00")]
    Task<CandidateResult> GenerateAsync(CandidateWork work, CancellationToken cancellationToken = default);

    [Alias("Cancel"), AlwaysInterleave]
    Task CancelAsync();

    /// <summary>Drops the candidate's idempotency record: its job ended and keeps the candidate in its result.</summary>
    [Alias("Forget"), OneWay]
    Task ForgetAsync();
}

/// <summary>
/// A model replica (key = "{siloName}/{device}"), always activated on the silo named in its key; a thin reentrant
/// facade over that silo's engine for the device.
/// </summary>
[Alias("metastone.IReplicaGrain")]
public interface IReplicaGrain : IGrainWithStringKey
{
    /// <summary>Generates the candidate, or joins its generation when this replica is generating it already (same job, index, seed).</summary>
    [Alias("Generate"), ResponseTimeout("00:30:00")]
    Task<CandidateResult> GenerateAsync(CandidateWork work, CancellationToken cancellationToken = default);

    /// <summary>
    /// The candidate if this replica finished it lately, or joins its generation if the replica is running it (for a caller
    /// whose silo died); null at once otherwise: how a resumed job finds candidates generated for its dead coordinator
    /// instead of generating them a second time.
    /// </summary>
    [Alias("Join"), ResponseTimeout("00:30:00")]
    Task<CandidateResult?> JoinAsync(CandidateWork work, CancellationToken cancellationToken = default);

    /// <summary>Tokenizes the prompt and checks it fits the context; throws <see cref="ArgumentException"/> when it does not.</summary>
    [Alias("CheckPrompt")]
    Task<PromptCheck> CheckPromptAsync(JobRequest request);

    [Alias("GetLoad")]
    Task<ReplicaLoad> GetLoadAsync();

    /// <summary>The model this replica serves (name, parameter counts): what a sweep counts compute with.</summary>
    [Alias("DescribeModel")]
    Task<ModelInfo> DescribeModelAsync();
}

/// <summary>Cluster-wide list of replicas with their last reported load (singleton, key 0).</summary>
[Alias("metastone.IReplicaRegistryGrain")]
public interface IReplicaRegistryGrain : IGrainWithIntegerKey
{
    /// <summary>A silo's heartbeat: the current load of each of its replicas.</summary>
    [Alias("Report")]
    Task ReportAsync(string silo, IReadOnlyList<ReplicaLoad> replicas);

    /// <summary>
    /// Chooses a live replica not in <paramref name="exclude"/> by load for one candidate and counts the candidate as
    /// outstanding there until the replica's heartbeat reports it ended (<see cref="ReplicaLoad.CandidatesEnded"/>): the
    /// one registry call of a candidate. Null when no replica is live.
    /// </summary>
    [Alias("Pick")]
    Task<string?> PickAsync(IReadOnlyList<string> exclude);

    [Alias("List")]
    Task<IReadOnlyList<ReplicaLoad>> ListAsync();

    /// <summary>Drops a silo's replicas at once (its silo was seen dead by a caller).</summary>
    [Alias("Forget")]
    Task ForgetAsync(string replica);
}

/// <summary>
/// Admission control of the whole cluster (singleton, key 0): the set of running jobs, persisted, so the bound holds across
/// silos and survives the loss of the admission grain's silo.
/// </summary>
[Alias("metastone.IAdmissionGrain")]
public interface IAdmissionGrain : IGrainWithIntegerKey
{
    /// <summary>
    /// Counts the job as running unless <paramref name="limit"/> jobs run already (0 = no limit); false = refused (counted).
    /// Idempotent: a job admitted before is admitted again.
    /// </summary>
    [Alias("TryAdmit")]
    Task<bool> TryAdmitAsync(string jobId, int limit);

    /// <summary>The job ended (or was never recorded): its place is free. Idempotent.</summary>
    [Alias("Release")]
    Task ReleaseAsync(string jobId);

    [Alias("GetSnapshot"), AlwaysInterleave]
    Task<AdmissionSnapshot> GetSnapshotAsync();
}

/// <summary>The running jobs of the cluster and the submissions refused because it ran its limit.</summary>
[GenerateSerializer, Alias("metastone.AdmissionSnapshot")]
public sealed record AdmissionSnapshot
{
    [Id(0)] public required IReadOnlyList<string> RunningJobs { get; init; }
    [Id(1)] public required long Refused { get; init; }
}
