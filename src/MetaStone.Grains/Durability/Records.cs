using MetaStone.Contracts;

namespace MetaStone.Grains.Durability;

// The persisted records of the grains (IPersistentState<T> on the storage providers named in StorageNames).
// Mutable classes with settable properties, so both the Orleans serializer (Redis, memory) and System.Text.Json
// (the embedded file storage) can write them.

/// <summary>One job as its coordinator persists it: the accepted request and, once it ended, its outcome.</summary>
[GenerateSerializer, Alias("metastone.JobRecord")]
public sealed class JobRecord
{
    [Id(0)] public JobRequest? Request { get; set; }
    [Id(1)] public int K { get; set; }
    [Id(2)] public JobState State { get; set; }
    [Id(3)] public string? Error { get; set; }
    [Id(4)] public DateTimeOffset CreatedAt { get; set; }
    /// <summary>Coordinator runs of the job (a second one means it was resumed after its silo died).</summary>
    [Id(5)] public int Runs { get; set; }
    [Id(6)] public JobResult? Result { get; set; }
}

/// <summary>
/// The idempotency record of one candidate: its result, written the moment its replica returned it, so a coordinator
/// that resumes the job (or a repeated call) takes it instead of generating it again.
/// </summary>
[GenerateSerializer, Alias("metastone.CandidateRecord")]
public sealed class CandidateRecord
{
    [Id(0)] public CandidateResult? Result { get; set; }
}

/// <summary>One sweep as persisted: its request, the model it measured, its finished items and its outcome.</summary>
[GenerateSerializer, Alias("metastone.SweepRecord")]
public sealed class SweepRecord
{
    [Id(0)] public SweepRequest? Request { get; set; }
    [Id(1)] public ModelInfo? Model { get; set; }
    [Id(2)] public SweepState State { get; set; }
    [Id(3)] public string? Error { get; set; }
    [Id(4)] public DateTimeOffset CreatedAt { get; set; }
    [Id(5)] public int Runs { get; set; }
    [Id(6)] public Dictionary<int, SweepItemResult> Items { get; set; } = [];
}

/// <summary>The cluster's running jobs (id → when admitted) and the submissions refused at the limit.</summary>
[GenerateSerializer, Alias("metastone.AdmissionRecord")]
public sealed class AdmissionRecord
{
    [Id(0)] public Dictionary<string, DateTimeOffset> Running { get; set; } = [];
    [Id(1)] public long Refused { get; set; }
}
