using MetaStone.Reasoning;

namespace MetaStone.Model.Generation;

/// <summary>Engine-wide settings.</summary>
public sealed record EngineOptions
{
    /// <summary>Sequences decoded together (KV cache slots).</summary>
    public int MaxBatch { get; init; } = 32;
    /// <summary>Prompt + response limit per sequence (clamped to the model's context window).</summary>
    public int MaxSequenceLength { get; init; } = 2048;
    /// <summary>Step rules for in-flight scoring; null disables scoring.</summary>
    public StepTokenSet? StepRules { get; init; }
    /// <summary>Tokens that end every sequence.</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    /// <summary>Prefill a prompt once and copy its KV rows to every candidate sharing it.</summary>
    public bool SharePrefix { get; init; } = true;
    /// <summary>Thread name (one engine per device).</summary>
    public string Name { get; init; } = "metastone-engine";
    /// <summary>
    /// Tries per candidate when an engine step fails. A failed prefill or decode step involves exactly the sequences
    /// it computed: they restart from their prompt with the same seed (same trajectory), queued sequences are not
    /// touched, other requests never see the error. From its second restart a candidate runs alone, so a fault that
    /// follows one sequence ends up failing only that sequence when its tries run out.
    /// </summary>
    public int MaxAttempts { get; init; } = 3;
    /// <summary>
    /// A floor on the time of one decode step (zero: none). For tests and demos that need a small model to run like a
    /// big one: the cluster's cancel, drain and fail-over tests need a job still running seconds after it was submitted,
    /// and the shipped tiny model finishes a 200-token candidate in a fraction of a second (faster with every engine
    /// gain, which made those tests race their own job). The engine thread waits out the rest of the step; requests
    /// posted meanwhile (a cancel) are handled when it ends.
    /// </summary>
    public TimeSpan MinDecodeStep { get; init; }
    /// <summary>Test hook: called on the engine thread before each batched decode with the seeds of its rows; an
    /// exception thrown here is handled exactly like a native error in that step.</summary>
    internal Action<IReadOnlyList<long>>? FaultInjection { get; init; }
}
