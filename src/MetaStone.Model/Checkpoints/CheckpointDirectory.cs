using System.Text.Json;
using TorchSharp;

namespace MetaStone.Model.Checkpoints;

/// <summary>Where one tensor of a model directory lives: its file and validated header entry.</summary>
public sealed record CheckpointTensorLocation(string FilePath, SafeTensorsEntry Entry);

/// <summary>
/// Hugging Face model directories: a single <c>model.safetensors</c>, or <c>model.safetensors.index.json</c>
/// (<c>{"metadata": {"total_size": …}, "weight_map": {name: shard file}}</c>) plus the shards it names.
/// </summary>
public static class CheckpointDirectory
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";

    /// <summary>
    /// Every tensor's file and header entry, without reading tensor data: lets callers check names and shapes
    /// against a config first. Prefers the index when both an index and a single file exist, as transformers does.
    /// </summary>
    public static IReadOnlyDictionary<string, CheckpointTensorLocation> ReadTensorLocations(string modelDirectory)
    {
        string indexPath = Path.Combine(modelDirectory, IndexFileName);
        if (File.Exists(indexPath))
            return ReadIndexedLocations(modelDirectory, indexPath);

        string singlePath = Path.Combine(modelDirectory, SingleFileName);
        if (File.Exists(singlePath))
        {
            var header = SafeTensorsHeader.Read(singlePath);
            return header.Entries.ToDictionary(e => e.Name, e => new CheckpointTensorLocation(singlePath, e), StringComparer.Ordinal);
        }

        throw new CheckpointFormatException(
            $"model directory '{modelDirectory}' has neither '{SingleFileName}' nor '{IndexFileName}'");
    }

    /// <summary>Loads the merged tensor dictionary of a model directory (single file or index + shards).</summary>
    public static IReadOnlyDictionary<string, torch.Tensor> Load(string modelDirectory, torch.Device? device = null, torch.ScalarType? castTo = null)
    {
        var locations = ReadTensorLocations(modelDirectory);
        var result = new Dictionary<string, torch.Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var shard in locations.Values.GroupBy(l => l.FilePath, StringComparer.Ordinal))
            {
                var header = SafeTensorsHeader.Read(shard.Key);
                var loaded = SafeTensors.Load(header, shard.Select(l => l.Entry.Name), device, castTo);
                foreach (var (name, tensor) in loaded)
                    result.Add(name, tensor);
            }
            return result;
        }
        catch
        {
            foreach (var tensor in result.Values)
                tensor.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Streams the tensors of a model directory (single file or index + shards) straight into preallocated tensors, shard
    /// by shard (see <see cref="SafeTensors.ReadInto"/>): the weights exist once in memory, in their final place.
    /// </summary>
    /// <param name="locations">From <see cref="ReadTensorLocations"/> (headers already validated).</param>
    /// <param name="targets">Name → contiguous tensor of the checkpoint entry's shape; every name must be in <paramref name="locations"/>.</param>
    public static void ReadInto(IReadOnlyDictionary<string, CheckpointTensorLocation> locations, IReadOnlyDictionary<string, torch.Tensor> targets)
    {
        var missing = targets.Keys.FirstOrDefault(name => !locations.ContainsKey(name));
        if (missing is not null)
            throw new CheckpointFormatException($"no checkpoint file holds tensor '{missing}'");
        foreach (var shard in targets.Keys.GroupBy(name => locations[name].FilePath, StringComparer.Ordinal))
        {
            var header = SafeTensorsHeader.Read(shard.Key);
            SafeTensors.ReadInto(header, shard.ToDictionary(name => name, name => targets[name], StringComparer.Ordinal));
        }
    }

    /// <summary>
    /// Writes tensors as <c>model-0000k-of-0000n.safetensors</c> shards of at most <paramref name="maxShardBytes"/>
    /// data bytes each (a single larger tensor gets a shard of its own) plus the index. Names are packed into shards in
    /// sorted order. One shard is written as plain <c>model.safetensors</c> with no index, as transformers does.
    /// </summary>
    public static void SaveSharded(
        string modelDirectory,
        IReadOnlyDictionary<string, torch.Tensor> tensors,
        long maxShardBytes,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxShardBytes, 1);
        Directory.CreateDirectory(modelDirectory);

        var shards = new List<List<string>>();
        long currentBytes = 0;
        long totalBytes = 0;
        foreach (var name in tensors.Keys.OrderBy(n => n, StringComparer.Ordinal))
        {
            long bytes = tensors[name].numel() * tensors[name].element_size();
            if (shards.Count == 0 || (currentBytes + bytes > maxShardBytes && currentBytes > 0))
            {
                shards.Add([]);
                currentBytes = 0;
            }
            shards[^1].Add(name);
            currentBytes += bytes;
            totalBytes += bytes;
        }

        if (shards.Count <= 1)
        {
            // A stale index would take precedence over the new single file on the next load.
            File.Delete(Path.Combine(modelDirectory, IndexFileName));
            SafeTensors.Save(Path.Combine(modelDirectory, SingleFileName), tensors, metadata);
            return;
        }

        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < shards.Count; i++)
        {
            string fileName = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
            var shardTensors = shards[i].ToDictionary(n => n, n => tensors[n], StringComparer.Ordinal);
            SafeTensors.Save(Path.Combine(modelDirectory, fileName), shardTensors, metadata);
            foreach (var name in shards[i])
                weightMap[name] = fileName;
        }

        using var stream = new FileStream(Path.Combine(modelDirectory, IndexFileName), FileMode.Create, FileAccess.Write);
        using var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        writer.WriteStartObject();
        writer.WriteStartObject("metadata");
        writer.WriteNumber("total_size", totalBytes);
        writer.WriteEndObject();
        writer.WriteStartObject("weight_map");
        foreach (var (name, fileName) in weightMap)
            writer.WriteString(name, fileName);
        writer.WriteEndObject();
        writer.WriteEndObject();
    }

    private static Dictionary<string, CheckpointTensorLocation> ReadIndexedLocations(string modelDirectory, string indexPath)
    {
        var weightMap = ReadWeightMap(indexPath);
        var headers = new Dictionary<string, SafeTensorsHeader>(StringComparer.Ordinal);
        var locations = new Dictionary<string, CheckpointTensorLocation>(StringComparer.Ordinal);
        foreach (var (name, shardFile) in weightMap)
        {
            if (!headers.TryGetValue(shardFile, out var header))
            {
                string shardPath = Path.Combine(modelDirectory, shardFile);
                if (!File.Exists(shardPath))
                    throw new CheckpointFormatException($"index '{indexPath}' names shard '{shardFile}' (for tensor '{name}'), which does not exist");
                header = SafeTensorsHeader.Read(shardPath);
                headers.Add(shardFile, header);
            }
            if (!header.EntriesByName.TryGetValue(name, out var entry))
                throw new CheckpointFormatException($"index '{indexPath}' maps tensor '{name}' to shard '{shardFile}', which does not contain it");
            locations.Add(name, new CheckpointTensorLocation(header.Path, entry));
        }
        return locations;
    }

    private static Dictionary<string, string> ReadWeightMap(string indexPath)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllBytes(indexPath));
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException($"index '{indexPath}' is not valid JSON: {e.Message}", e);
        }

        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object
                || !document.RootElement.TryGetProperty("weight_map", out var map)
                || map.ValueKind != JsonValueKind.Object)
            {
                throw new CheckpointFormatException($"index '{indexPath}' has no 'weight_map' object");
            }

            var weightMap = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var item in map.EnumerateObject())
            {
                if (item.Value.ValueKind != JsonValueKind.String)
                    throw new CheckpointFormatException($"index '{indexPath}': weight_map entry for tensor '{item.Name}' is not a file name string");
                string shardFile = item.Value.GetString()!;
                // Shards must sit in the model directory: a path here could point the loader at any file on disk.
                if (shardFile.Length == 0 || shardFile != Path.GetFileName(shardFile) || shardFile is "." or ".."
                    || shardFile.Contains('/') || shardFile.Contains('\\'))
                {
                    throw new CheckpointFormatException($"index '{indexPath}': shard '{shardFile}' for tensor '{item.Name}' is not a plain file name");
                }
                if (!weightMap.TryAdd(item.Name, shardFile))
                    throw new CheckpointFormatException($"index '{indexPath}' names tensor '{item.Name}' twice");
            }
            return weightMap;
        }
    }
}
