namespace MetaStone.Contracts;

/// <summary>One dataset row of a sweep, in the reference scripts' <c>{prompt, answer}</c> shape.</summary>
[GenerateSerializer, Immutable, Alias("metastone.SweepProblem")]
public sealed record SweepProblem(
    [property: Id(0)] string Prompt,
    [property: Id(1)] string Answer,
    [property: Id(2)] string? Id = null);

/// <summary>
/// A scaling-law sweep: for every problem and every thinking budget, one job of <see cref="KMax"/> candidates
/// (k_max = the largest of <see cref="Ks"/>); every smaller k is estimated afterwards by subsampling those
/// candidates over <see cref="SubsampleSeeds"/> seeds, never generated again.
/// </summary>
[GenerateSerializer, Immutable, Alias("metastone.SweepRequest")]
public sealed record SweepRequest
{
    [Id(0)] public required IReadOnlyList<SweepProblem> Problems { get; init; }
    /// <summary>The k values the analysis reports; the largest is generated.</summary>
    [Id(1)] public required IReadOnlyList<int> Ks { get; init; }
    /// <summary>Thinking budgets in tokens; null = no budget (only the context and <see cref="SamplingSettings.MaxNewTokens"/> limit).</summary>
    [Id(2)] public required IReadOnlyList<int?> Budgets { get; init; }
    [Id(3)] public int SubsampleSeeds { get; init; } = 5;
    /// <summary>Items (problem × budget jobs of k_max candidates) running at once; 0 = enough to fill the cluster's batch slots.</summary>
    [Id(4)] public int MaxConcurrentItems { get; init; }
    /// <summary>Sampling of every candidate; its thinking budget stays null (each item takes one of <see cref="Budgets"/>).</summary>
    [Id(5)] public SamplingSettings Sampling { get; init; } = new();
    /// <summary>Problem i uses job seed <c>Seed + 1000·i</c> at every budget (candidate j adds j), so budgets compare like with like.</summary>
    [Id(6)] public long Seed { get; init; } = 1;
    /// <summary>Free text the CLI records (dataset path, command line).</summary>
    [Id(7)] public string? Description { get; init; }

    public int KMax => Ks.Count == 0 ? 0 : Ks.Max();
    public int ItemCount => Problems.Count * Budgets.Count;
}

/// <summary>The model the cluster serves, as a sweep needs it to count compute.</summary>
[GenerateSerializer, Immutable, Alias("metastone.ModelInfo")]
public sealed record ModelInfo(
    [property: Id(0)] string Name,
    [property: Id(1)] long PolicyParameters,
    [property: Id(2)] int HiddenSize,
    [property: Id(3)] long HeadParameters);

/// <summary>One generated candidate of a sweep item, graded: what the analysis needs and nothing more.</summary>
[GenerateSerializer, Immutable, Alias("metastone.SweepCandidate")]
public sealed record SweepCandidate(
    [property: Id(0)] double Score,
    [property: Id(1)] string? Answer,
    [property: Id(2)] bool Correct,
    [property: Id(3)] int ThinkingTokens,
    [property: Id(4)] int Steps,
    [property: Id(5)] CandidateFinishReason FinishReason);

/// <summary>A finished sweep item: the k_max graded candidates of one problem at one budget.</summary>
[GenerateSerializer, Immutable, Alias("metastone.SweepItemResult")]
public sealed record SweepItemResult
{
    [Id(0)] public required int Item { get; init; }
    [Id(1)] public required int Problem { get; init; }
    [Id(2)] public int? Budget { get; init; }
    [Id(3)] public required string JobId { get; init; }
    [Id(4)] public required IReadOnlyList<SweepCandidate> Candidates { get; init; }
    [Id(5)] public double Seconds { get; init; }
}

[GenerateSerializer, Alias("metastone.SweepState")]
public enum SweepState
{
    Running,
    Completed,
    Failed,
    Cancelled,
}

/// <summary>Where a sweep is. <see cref="EtaSeconds"/> comes from the rate of the current run (null until an item finished in it).</summary>
[GenerateSerializer, Immutable, Alias("metastone.SweepStatus")]
public sealed record SweepStatus
{
    [Id(0)] public required string SweepId { get; init; }
    [Id(1)] public required SweepState State { get; init; }
    [Id(2)] public required int TotalItems { get; init; }
    [Id(3)] public required int FinishedItems { get; init; }
    [Id(4)] public int RunningItems { get; init; }
    /// <summary>Items finished by the current sweep run (the rest were found finished in the store).</summary>
    [Id(5)] public int FinishedThisRun { get; init; }
    [Id(6)] public double RunSeconds { get; init; }
    [Id(7)] public double? EtaSeconds { get; init; }
    [Id(8)] public int CandidatesPerItem { get; init; }
    [Id(9)] public string? Error { get; init; }
    [Id(10)] public DateTimeOffset CreatedAt { get; init; }
    [Id(11)] public string? Silo { get; init; }
    /// <summary>Sweep-grain activations that have run it (more than 1 after a resume).</summary>
    [Id(12)] public int Runs { get; init; }
    [Id(13)] public ModelInfo? Model { get; init; }
    /// <summary>Problems whose every budget is finished.</summary>
    [Id(14)] public int ProblemsFinished { get; init; }
    [Id(15)] public int Problems { get; init; }
    public bool IsTerminal => State != SweepState.Running;
}

/// <summary>
/// A scaling-law sweep (key = sweep id) run as a cluster job: it spreads its items (problem × budget) over the
/// cluster as coordinator jobs, at most <see cref="SweepRequest.MaxConcurrentItems"/> at once, grades and persists
/// each finished item, and on a new activation (its silo died, or the same sweep was started again) runs only the
/// items not yet persisted.
/// </summary>
[Alias("metastone.ISweepGrain")]
public interface ISweepGrain : IGrainWithStringKey
{
    /// <summary>
    /// Accepts the sweep (persisted before this returns) and runs it. Starting a sweep that exists resumes it;
    /// a different request under an existing id is an <see cref="ArgumentException"/>.
    /// </summary>
    [Alias("Start"), ResponseTimeout("00:02:00")]
    Task<SweepStatus> StartAsync(SweepRequest request);

    [Alias("GetStatus"), AlwaysInterleave]
    Task<SweepStatus> GetStatusAsync();

    /// <summary>Returns when more than <paramref name="afterFinished"/> items are finished, the sweep ended, or <paramref name="maxWait"/> passed.</summary>
    [Alias("WaitForProgress"), AlwaysInterleave, ResponseTimeout("00:01:00")]
    Task<SweepStatus> WaitForProgressAsync(int afterFinished, TimeSpan maxWait, CancellationToken cancellationToken = default);

    [Alias("GetRequest"), AlwaysInterleave]
    Task<SweepRequest> GetRequestAsync();

    /// <summary>Finished items in item order, <paramref name="count"/> at most from <paramref name="offset"/>.</summary>
    [Alias("GetItems"), AlwaysInterleave]
    Task<IReadOnlyList<SweepItemResult>> GetItemsAsync(int offset, int count);

    [Alias("Cancel"), AlwaysInterleave]
    Task<SweepStatus> CancelAsync(string reason);
}
