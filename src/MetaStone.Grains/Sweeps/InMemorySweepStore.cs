using System.Collections.Concurrent;
using MetaStone.Contracts;

namespace MetaStone.Grains.Sweeps;

/// <summary>Sweeps in this process only (embedded mode): they last as long as the process.</summary>
public sealed class InMemorySweepStore : ISweepStore
{
    private readonly ConcurrentDictionary<string, StoredSweep> _sweeps = new();
    private readonly object _gate = new();

    public Task<bool> CreateAsync(string sweepId, SweepRequest request, ModelInfo model, DateTimeOffset createdAt) =>
        Task.FromResult(_sweeps.TryAdd(sweepId, new StoredSweep
        {
            SweepId = sweepId, Request = request, Model = model, State = SweepState.Running, CreatedAt = createdAt,
            Items = new Dictionary<int, SweepItemResult>(),
        }));

    public Task<StoredSweep?> LoadAsync(string sweepId) => Task.FromResult(_sweeps.TryGetValue(sweepId, out var s) ? s : null);

    public Task<int> StartRunAsync(string sweepId) =>
        Task.FromResult(Update(sweepId, s => s with { Runs = s.Runs + 1, State = SweepState.Running, Error = null }).Runs);

    public Task SaveItemAsync(string sweepId, SweepItemResult item)
    {
        Update(sweepId, s => s with { Items = new Dictionary<int, SweepItemResult>(s.Items) { [item.Item] = item } });
        return Task.CompletedTask;
    }

    public Task EndAsync(string sweepId, SweepState state, string? error)
    {
        Update(sweepId, s => s with { State = state, Error = error });
        return Task.CompletedTask;
    }

    public Task<IReadOnlyList<string>> RunningSweepsAsync() =>
        Task.FromResult<IReadOnlyList<string>>(_sweeps.Values.Where(s => s.State == SweepState.Running).Select(s => s.SweepId).ToList());

    // One process: the sweep's grain lives exactly as long as this store.
    public Task RenewLeaseAsync(string sweepId, string owner, TimeSpan ttl) => Task.CompletedTask;
    public Task<bool> HasLeaseAsync(string sweepId) => Task.FromResult(true);

    private StoredSweep Update(string sweepId, Func<StoredSweep, StoredSweep> change)
    {
        lock (_gate)
        {
            if (!_sweeps.TryGetValue(sweepId, out var sweep)) throw new KeyNotFoundException($"unknown sweep id '{sweepId}'");
            var updated = change(sweep);
            _sweeps[sweepId] = updated;
            return updated;
        }
    }
}
