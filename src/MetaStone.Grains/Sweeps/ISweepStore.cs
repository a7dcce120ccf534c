using MetaStone.Contracts;

namespace MetaStone.Grains.Sweeps;

/// <summary>A sweep as stored: its request, the model it measured, its finished items and its outcome.</summary>
public sealed record StoredSweep
{
    public required string SweepId { get; init; }
    public required SweepRequest Request { get; init; }
    public required ModelInfo Model { get; init; }
    public required SweepState State { get; init; }
    public string? Error { get; init; }
    public required DateTimeOffset CreatedAt { get; init; }
    public int Runs { get; init; }
    public required IReadOnlyDictionary<int, SweepItemResult> Items { get; init; }
}

/// <summary>
/// Durable sweep records: Redis in a cluster (a finished item is never generated again, whatever dies), memory in
/// the embedded single-process mode.
/// </summary>
public interface ISweepStore
{
    /// <summary>Records an accepted sweep; false when one with this id exists already.</summary>
    Task<bool> CreateAsync(string sweepId, SweepRequest request, ModelInfo model, DateTimeOffset createdAt);
    Task<StoredSweep?> LoadAsync(string sweepId);
    /// <summary>Marks the sweep running (again), counts one more run and returns the count.</summary>
    Task<int> StartRunAsync(string sweepId);
    Task SaveItemAsync(string sweepId, SweepItemResult item);
    Task EndAsync(string sweepId, SweepState state, string? error);
    Task<IReadOnlyList<string>> RunningSweepsAsync();
    Task RenewLeaseAsync(string sweepId, string owner, TimeSpan ttl);
    Task<bool> HasLeaseAsync(string sweepId);
}
