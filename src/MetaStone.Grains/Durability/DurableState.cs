using MetaStone.Contracts;
using Orleans.Storage;

namespace MetaStone.Grains.Durability;

/// <summary>Names of the grain storage providers the silo configures (Redis in a cluster, memory or files when embedded).</summary>
public static class StorageNames
{
    /// <summary>Job records, candidate idempotency records and the admission record.</summary>
    public const string Jobs = "metastone-jobs";
    /// <summary>Sweep records (files in the embedded mode, so a sweep can be resumed by a later process).</summary>
    public const string Sweeps = "metastone-sweeps";
}

/// <summary>
/// A grain's persisted record (<see cref="IPersistentState{TState}"/>) with the two things Orleans leaves to the caller:
/// writes of a reentrant grain are serialized (two concurrent writes of one state would conflict on its ETag), and every
/// read and write rides out a Redis outage through <see cref="RedisOutagePolicy"/>.
/// </summary>
public sealed class DurableState<T>(IPersistentState<T> state, RedisOutagePolicy outage) where T : class
{
    private readonly SemaphoreSlim _writeGate = new(1, 1);

    public T Value => state.State;

    /// <summary>True once the record was written (by this or an earlier activation) and not cleared.</summary>
    public bool Exists => state.RecordExists;

    public Task ReadAsync(string what) => outage.RunAsync(what, () => state.ReadStateAsync());

    /// <summary>
    /// Writes the record. A conflict on the first attempt means another activation owns the record now (after a silo loss):
    /// <see cref="ActivationReplacedException"/>. A conflict after a retried attempt is this activation's own earlier
    /// write, which reached Redis before the connection broke: the stored ETag is adopted and the record written again.
    /// </summary>
    public async Task WriteAsync(string what)
    {
        await _writeGate.WaitAsync();
        try
        {
            int attempts = 0;
            await outage.RunAsync(what, async () =>
            {
                attempts++;
                try { await state.WriteStateAsync(); }
                catch (InconsistentStateException) when (attempts > 1)
                {
                    var intended = state.State;
                    await state.ReadStateAsync();
                    state.State = intended;
                    await state.WriteStateAsync();
                }
            });
        }
        catch (InconsistentStateException e)
        {
            throw new ActivationReplacedException($"{what}: the record was written by another activation ({e.Message}); ask again");
        }
        finally
        {
            _writeGate.Release();
        }
    }

    public async Task ClearAsync(string what)
    {
        await _writeGate.WaitAsync();
        try { await outage.RunAsync(what, () => state.ClearStateAsync()); }
        finally { _writeGate.Release(); }
    }
}
