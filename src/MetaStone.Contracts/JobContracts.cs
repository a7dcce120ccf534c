namespace MetaStone.Contracts;

/// <summary>
/// One test-time-scaling query: a prompt answered by k candidate trajectories, the best by SPRM wins.
/// Either <see cref="Effort"/> (low / medium / high = k 2 / 8 / 32) or an explicit <see cref="K"/> (1–256, wins).
/// </summary>
[GenerateSerializer, Immutable, Alias("metastone.JobRequest")]
public sealed record JobRequest
{
    [Id(0)] public required string Prompt { get; init; }
    /// <summary>Null with no <see cref="K"/> means medium.</summary>
    [Id(1)] public ReasoningEffort? Effort { get; init; }
    [Id(2)] public int? K { get; init; }
    [Id(3)] public SamplingSettings Sampling { get; init; } = new();
    /// <summary>SPRM Best-of-N by default.</summary>
    [Id(4)] public WinnerSelection Selection { get; init; }
    /// <summary>Candidate i uses seed <c>Seed + i</c>, so a job is reproducible and a retried candidate regenerates the same trajectory.</summary>
    [Id(5)] public long Seed { get; init; }
}

/// <summary>The work one candidate grain sends to a replica: everything needed to regenerate candidate <see cref="Index"/> exactly.</summary>
[GenerateSerializer, Immutable, Alias("metastone.CandidateWork")]
public sealed record CandidateWork(
    [property: Id(0)] string JobId,
    [property: Id(1)] int Index,
    [property: Id(2)] long Seed,
    [property: Id(3)] JobRequest Request)
{
    /// <summary>
    /// A caller of this candidate died (the job was resumed, or the candidate grain's silo was lost): a replica may still be
    /// generating it, or have just finished it, for that caller, so the candidate grain looks there first.
    /// </summary>
    [Id(4)] public bool CallerLost { get; init; }
}

/// <summary>One finished candidate trajectory as the cluster reports it (text and scores, never tensors).</summary>
[GenerateSerializer, Immutable, Alias("metastone.CandidateResult")]
public sealed record CandidateResult
{
    [Id(0)] public required int Index { get; init; }
    [Id(1)] public required long Seed { get; init; }
    [Id(2)] public required string Text { get; init; }
    [Id(3)] public string? Answer { get; init; }
    [Id(4)] public required int PromptTokens { get; init; }
    [Id(5)] public required int ResponseTokens { get; init; }
    [Id(6)] public required int ThinkingTokens { get; init; }
    [Id(7)] public required int AnswerTokens { get; init; }
    /// <summary>SPRM probability of each reasoning step, in order.</summary>
    [Id(8)] public required double[] StepScores { get; init; }
    /// <summary>Geometric mean of <see cref="StepScores"/> (0 with no steps): the released MetaStone rule.</summary>
    [Id(9)] public required double Score { get; init; }
    [Id(10)] public required CandidateFinishReason FinishReason { get; init; }
    /// <summary>Replica (silo/device) that generated it.</summary>
    [Id(11)] public required string Replica { get; init; }
    /// <summary>How many replicas were tried (1 unless a silo died or timed out).</summary>
    [Id(12)] public int Attempts { get; init; } = 1;
    [Id(13)] public double GenerationSeconds { get; init; }
}

[GenerateSerializer, Alias("metastone.JobState")]
public enum JobState
{
    Running,
    Completed,
    Failed,
    Cancelled,
}

/// <summary>Where a job is: how many candidates finished and the best one so far.</summary>
[GenerateSerializer, Immutable, Alias("metastone.JobStatus")]
public sealed record JobStatus
{
    [Id(0)] public required string JobId { get; init; }
    [Id(1)] public required JobState State { get; init; }
    [Id(2)] public required int K { get; init; }
    [Id(3)] public required int Finished { get; init; }
    [Id(4)] public int? BestIndex { get; init; }
    [Id(5)] public double? BestScore { get; init; }
    /// <summary>Why the job failed or was cancelled.</summary>
    [Id(6)] public string? Error { get; init; }
    [Id(7)] public DateTimeOffset CreatedAt { get; init; }
    /// <summary>Silo whose coordinator runs the job now.</summary>
    [Id(8)] public string? CoordinatorSilo { get; init; }
    public bool IsTerminal => State != JobState.Running;
}

/// <summary>A finished job: every candidate and the selected winner.</summary>
[GenerateSerializer, Immutable, Alias("metastone.JobResult")]
public sealed record JobResult
{
    [Id(0)] public required string JobId { get; init; }
    [Id(1)] public required JobRequest Request { get; init; }
    [Id(2)] public required int K { get; init; }
    [Id(3)] public required WinnerSelection Selection { get; init; }
    [Id(4)] public required int WinnerIndex { get; init; }
    /// <summary>All k candidates ordered by index.</summary>
    [Id(5)] public required IReadOnlyList<CandidateResult> Candidates { get; init; }
    [Id(6)] public required double ElapsedSeconds { get; init; }
    /// <summary>Coordinator activations that worked on the job (more than 1 after a coordinator silo died).</summary>
    [Id(7)] public int CoordinatorRuns { get; init; } = 1;
    public CandidateResult Winner => Candidates.Single(c => c.Index == WinnerIndex);
}

[GenerateSerializer, Alias("metastone.ProgressKind")]
public enum ProgressKind
{
    Accepted,
    CandidateStarted,
    CandidateFinished,
    Completed,
    Failed,
    Cancelled,
}

/// <summary>One progress event of a job, numbered per coordinator run (see <see cref="ProgressPage"/>).</summary>
[GenerateSerializer, Immutable, Alias("metastone.ProgressEvent")]
public sealed record ProgressEvent
{
    [Id(0)] public required int Sequence { get; init; }
    [Id(1)] public required ProgressKind Kind { get; init; }
    [Id(2)] public int? CandidateIndex { get; init; }
    /// <summary>Trajectory score of a finished candidate.</summary>
    [Id(3)] public double? Score { get; init; }
    [Id(4)] public string? Replica { get; init; }
    [Id(5)] public required int Finished { get; init; }
    [Id(6)] public required int K { get; init; }
    [Id(7)] public int? BestIndex { get; init; }
    [Id(8)] public double? BestScore { get; init; }
    [Id(9)] public string? Message { get; init; }
    public bool IsTerminal => Kind is ProgressKind.Completed or ProgressKind.Failed or ProgressKind.Cancelled;
}

/// <summary>
/// Events after a sequence number. <see cref="RunId"/> changes when a new coordinator activation took over the
/// job (its silo died); a watcher then reads from 0 again and skips what it has already seen.
/// </summary>
[GenerateSerializer, Immutable, Alias("metastone.ProgressPage")]
public sealed record ProgressPage(
    [property: Id(0)] string RunId,
    [property: Id(1)] IReadOnlyList<ProgressEvent> Events);

/// <summary>Live load of one model replica (a device on a silo).</summary>
[GenerateSerializer, Immutable, Alias("metastone.ReplicaLoad")]
public sealed record ReplicaLoad
{
    /// <summary>Grain key: "{silo}/{device}".</summary>
    [Id(0)] public required string Replica { get; init; }
    [Id(1)] public required int ActiveSequences { get; init; }
    [Id(2)] public required int QueuedSequences { get; init; }
    [Id(3)] public required int Slots { get; init; }
    [Id(4)] public double TokensPerSecond { get; init; }
    [Id(5)] public long GeneratedTokens { get; init; }
    [Id(6)] public required int ContextLength { get; init; }
    /// <summary>
    /// Candidate calls this replica has ended (returned, failed or cancelled) since its silo started, a running count: the
    /// registry subtracts what ended since the last heartbeat from the candidates it placed here, so a candidate costs one
    /// registry call (the pick) instead of a pick and a release. Cumulative, so a lost heartbeat loses no release.
    /// </summary>
    [Id(7)] public long CandidatesEnded { get; init; }
    /// <summary>Sequences this replica is busy with: what load-aware placement compares.</summary>
    public int Busy => ActiveSequences + QueuedSequences;
}

/// <summary>Replica's verdict on a prompt before any candidate is generated.</summary>
[GenerateSerializer, Immutable, Alias("metastone.PromptCheck")]
public sealed record PromptCheck(
    [property: Id(0)] int PromptTokens,
    [property: Id(1)] int ContextLength);

/// <summary>
/// The cluster's bounded job queue is full: the job was not accepted and nothing of it is stored; submit it again
/// later (the same job id is fine). Counted in the job store (<c>stats</c> field <c>rejectedBusy</c>).
/// </summary>
[GenerateSerializer, Alias("metastone.ClusterBusyException")]
public sealed class ClusterBusyException : Exception
{
    public ClusterBusyException(string message) : base(message) { }
}
