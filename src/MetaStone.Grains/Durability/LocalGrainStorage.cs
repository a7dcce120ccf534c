using System.Globalization;
using System.Text;
using Orleans.Runtime;
using Orleans.Storage;

namespace MetaStone.Grains.Durability;

/// <summary>
/// Grain state of the embedded single-process mode, in this process: in memory, or in files (one JSON file per grain,
/// <c>{directory}/{state}-{grain id, URI-escaped}.json</c>) so a sweep started by one <c>metastone sweep</c> process is
/// resumed by the next. Hand-written for two reasons, both measured: Orleans ships no file-backed storage, and its memory
/// storage sends every read and write through a storage grain, which tripled the orchestration overhead of a k = 32 job
/// with 32 candidate records per job. In memory a record is kept as the object written (no serialization: it is read
/// back only by a later activation of the same grain, in the same process, after this one is gone); in files as JSON. The
/// ETag is the write count, checked like Orleans' providers check theirs. File writes go to a temporary file that is renamed into place, so a process that dies
/// mid-write leaves the previous state.
/// </summary>
public sealed class LocalGrainStorage(IGrainStorageSerializer serializer, string? directory = null) : IGrainStorage
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, (long ETag, object? State)> _memory = [];

    private string KeyOf(string stateName, GrainId grainId) => $"{stateName}-{Uri.EscapeDataString(grainId.ToString())}";

    public Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        lock (_gate)
        {
            if (Load(KeyOf(stateName, grainId)) is { } stored)
            {
                grainState.State = stored.State is BinaryData json ? serializer.Deserialize<T>(json) : (T)stored.State!;
                (grainState.ETag, grainState.RecordExists) = (stored.ETag.ToString(CultureInfo.InvariantCulture), true);
            }
            else (grainState.ETag, grainState.RecordExists) = (null, false);
        }
        return Task.CompletedTask;
    }

    public Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        string key = KeyOf(stateName, grainId);
        lock (_gate)
        {
            var stored = Load(key);
            string? storedETag = stored?.ETag.ToString(CultureInfo.InvariantCulture);
            if (storedETag != grainState.ETag)
                throw new InconsistentStateException($"grain state {key} was written by someone else (ETag {storedETag ?? "none"}, expected {grainState.ETag ?? "none"})",
                    storedETag ?? "", grainState.ETag ?? "");
            long etag = (stored?.ETag ?? 0) + 1;
            Save(key, (etag, directory is null ? grainState.State : serializer.Serialize(grainState.State)));
            (grainState.ETag, grainState.RecordExists) = (etag.ToString(CultureInfo.InvariantCulture), true);
        }
        return Task.CompletedTask;
    }

    public Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        string key = KeyOf(stateName, grainId);
        lock (_gate)
        {
            if (directory is null) _memory.Remove(key);
            else File.Delete(PathOf(key));
            (grainState.ETag, grainState.RecordExists) = (null, false);
        }
        return Task.CompletedTask;
    }

    private string PathOf(string key) => Path.Combine(directory!, key + ".json");

    private (long ETag, object? State)? Load(string key)
    {
        if (directory is null) return _memory.TryGetValue(key, out var value) ? value : null;
        string path = PathOf(key);
        if (!File.Exists(path)) return null;
        var parts = File.ReadAllText(path, Encoding.UTF8).Split('\n', 2);
        return (long.Parse(parts[0], CultureInfo.InvariantCulture), BinaryData.FromString(parts[1]));
    }

    private void Save(string key, (long ETag, object? State) value)
    {
        if (directory is null)
        {
            _memory[key] = value;
            return;
        }
        Directory.CreateDirectory(directory);
        string path = PathOf(key), temporary = path + ".tmp";
        File.WriteAllText(temporary, value.ETag.ToString(CultureInfo.InvariantCulture) + "\n" + ((BinaryData)value.State!).ToString(), Encoding.UTF8);
        File.Move(temporary, path, overwrite: true);
    }
}
