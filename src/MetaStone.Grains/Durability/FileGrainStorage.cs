using System.Text;
using Orleans.Runtime;
using Orleans.Storage;

namespace MetaStone.Grains.Durability;

/// <summary>
/// Grain state in files, one JSON file per grain (<c>{directory}/{state}-{grain id, URI-escaped}.json</c>), for the embedded
/// single-process mode: a sweep started by one <c>metastone sweep</c> process is resumed by the next one. Hand-written because
/// Orleans ships no file-backed grain storage. Writes go to a temporary file that is renamed into place, so a process that
/// dies mid-write leaves the previous state; the ETag is the write count, checked like the Redis provider checks its own.
/// </summary>
public sealed class FileGrainStorage(string directory, IGrainStorageSerializer serializer) : IGrainStorage
{
    private readonly Lock _gate = new();

    private string PathOf(string stateName, GrainId grainId) =>
        Path.Combine(directory, $"{stateName}-{Uri.EscapeDataString(grainId.ToString())}.json");

    private sealed record Envelope(string ETag, BinaryData State);

    public Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        string path = PathOf(stateName, grainId);
        lock (_gate)
        {
            if (!File.Exists(path))
            {
                (grainState.RecordExists, grainState.ETag) = (false, null);
                return Task.CompletedTask;
            }
            var lines = File.ReadAllText(path, Encoding.UTF8).Split('\n', 2);
            grainState.ETag = lines[0];
            grainState.State = serializer.Deserialize<T>(BinaryData.FromString(lines[1]));
            grainState.RecordExists = true;
        }
        return Task.CompletedTask;
    }

    public Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        string path = PathOf(stateName, grainId);
        lock (_gate)
        {
            string? stored = File.Exists(path) ? File.ReadLines(path).First() : null;
            if (stored != grainState.ETag)
                throw new InconsistentStateException($"{path} was written by someone else (ETag {stored ?? "none"}, expected {grainState.ETag ?? "none"})", stored ?? "", grainState.ETag ?? "");
            string etag = ((stored is null ? 0 : long.Parse(stored, System.Globalization.CultureInfo.InvariantCulture)) + 1).ToString(System.Globalization.CultureInfo.InvariantCulture);
            Directory.CreateDirectory(directory);
            string temporary = path + ".tmp";
            File.WriteAllText(temporary, etag + "\n" + serializer.Serialize(grainState.State).ToString(), Encoding.UTF8);
            File.Move(temporary, path, overwrite: true);
            (grainState.ETag, grainState.RecordExists) = (etag, true);
        }
        return Task.CompletedTask;
    }

    public Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        lock (_gate)
        {
            File.Delete(PathOf(stateName, grainId));
            (grainState.ETag, grainState.RecordExists) = (null, false);
        }
        return Task.CompletedTask;
    }
}
