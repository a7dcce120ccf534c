using System.Text.Json;
using TorchSharp;
using DeviceType = TorchSharp.DeviceType;

namespace MetaStone.Model.Checkpoints;

/// <summary>Reader and writer for the safetensors format (8-byte LE header length, JSON header, raw LE data).</summary>
public static class SafeTensors
{
    /// <summary>Reads and validates only the header, so callers can check names, dtypes and shapes before loading.</summary>
    public static SafeTensorsHeader ReadHeader(string path) => SafeTensorsHeader.Read(path);

    /// <summary>Loads every tensor in the file.</summary>
    /// <param name="device">Where the tensors end up (CPU if null).</param>
    /// <param name="castTo">
    /// Converts floating-point tensors to this type. Integer and bool tensors keep their dtype: casting an index
    /// buffer to a float type would corrupt it.
    /// </param>
    public static IReadOnlyDictionary<string, torch.Tensor> Load(string path, torch.Device? device = null, torch.ScalarType? castTo = null)
    {
        var header = SafeTensorsHeader.Read(path);
        return Load(header, header.Entries.Select(e => e.Name), device, castTo);
    }

    /// <summary>Loads the named tensors of a file whose header was already read.</summary>
    public static IReadOnlyDictionary<string, torch.Tensor> Load(
        SafeTensorsHeader header,
        IEnumerable<string> names,
        torch.Device? device = null,
        torch.ScalarType? castTo = null)
    {
        EnsureLittleEndianHost();
        var wanted = new HashSet<string>(StringComparer.Ordinal);
        foreach (var name in names)
        {
            if (!header.EntriesByName.ContainsKey(name))
                throw new CheckpointFormatException($"safetensors file '{header.Path}' has no tensor '{name}'");
            wanted.Add(name);
        }

        var result = new Dictionary<string, torch.Tensor>(StringComparer.Ordinal);
        try
        {
            using var stream = new FileStream(header.Path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1);
            // The file may have changed since the header was read; the offsets were validated against the old length.
            if (stream.Length != header.DataStart + header.DataLength)
                throw new CheckpointFormatException($"safetensors file '{header.Path}' changed size since its header was read");

            // Header entries are in data order, so the reads walk the file forward.
            foreach (var entry in header.Entries)
            {
                if (!wanted.Contains(entry.Name))
                    continue;
                var scalarType = entry.DType.ToScalarType() ?? throw new CheckpointFormatException(
                    $"safetensors file '{header.Path}', tensor '{entry.Name}': dtype {entry.DType.ToHeaderName()} has no TorchSharp equivalent");

                var tensor = torch.empty(entry.Shape.ToArray(), scalarType);
                result.Add(entry.Name, tensor);
                stream.Position = header.DataStart + entry.Begin;
                TensorBytes.ReadInto(tensor, stream);
                result[entry.Name] = ConvertAndMove(tensor, device, castTo);
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
    /// Streams named tensors of a file whose header was already read straight into preallocated tensors (model
    /// parameters): no dictionary of loaded tensors, so a model loads with one copy of its weights in memory instead of
    /// two. A CPU target of the file's dtype is filled by reading the file into its memory; any other target (another
    /// dtype, another device) through one chunk of at most 64 MB of the file's dtype, converted by <c>copy_</c>.
    /// </summary>
    /// <param name="targets">Name → contiguous tensor of the entry's shape.</param>
    public static void ReadInto(SafeTensorsHeader header, IReadOnlyDictionary<string, torch.Tensor> targets)
    {
        EnsureLittleEndianHost();
        foreach (var (name, target) in targets)
        {
            if (!header.EntriesByName.TryGetValue(name, out var entry))
                throw new CheckpointFormatException($"safetensors file '{header.Path}' has no tensor '{name}'");
            if (!target.shape.SequenceEqual(entry.Shape))
                throw new CheckpointFormatException($"safetensors file '{header.Path}', tensor '{name}': shape [{string.Join(",", entry.Shape)}] does not match the target's [{string.Join(",", target.shape)}]");
            if (!target.is_contiguous())
                throw new ArgumentException($"target for tensor '{name}' is not contiguous", nameof(targets));
        }

        using var stream = new FileStream(header.Path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1);
        // The file may have changed since the header was read; the offsets were validated against the old length.
        if (stream.Length != header.DataStart + header.DataLength)
            throw new CheckpointFormatException($"safetensors file '{header.Path}' changed size since its header was read");
        using var noGrad = torch.no_grad();
        // Header entries are in data order, so the reads walk the file forward.
        foreach (var entry in header.Entries)
        {
            if (!targets.TryGetValue(entry.Name, out var target))
                continue;
            var scalarType = entry.DType.ToScalarType() ?? throw new CheckpointFormatException(
                $"safetensors file '{header.Path}', tensor '{entry.Name}': dtype {entry.DType.ToHeaderName()} has no TorchSharp equivalent");
            stream.Position = header.DataStart + entry.Begin;
            if (target.device_type == DeviceType.CPU && target.dtype == scalarType)
                TensorBytes.ReadInto(target, stream);
            else
                TensorBytes.ReadConverted(target, scalarType, stream);
        }
    }

    /// <summary>
    /// Writes tensors (any device, any layout) as contiguous little-endian data in their own dtype, names sorted,
    /// offsets packed, header space-padded so the data starts at a multiple of 8. Writes to a temporary file first
    /// so a crash never leaves a truncated checkpoint under the final name.
    /// </summary>
    public static void Save(string path, IReadOnlyDictionary<string, torch.Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        EnsureLittleEndianHost();
        var names = tensors.Keys.OrderBy(n => n, StringComparer.Ordinal).ToList();
        var dtypes = new Dictionary<string, SafeTensorsDType>(StringComparer.Ordinal);
        foreach (var name in names)
        {
            if (name == "__metadata__")
                throw new ArgumentException("'__metadata__' is reserved and cannot name a tensor", nameof(tensors));
            var scalarType = tensors[name].dtype;
            dtypes[name] = SafeTensorsDTypes.FromScalarType(scalarType)
                ?? throw new ArgumentException($"tensor '{name}' has dtype {scalarType}, which safetensors cannot store", nameof(tensors));
        }

        byte[] header = BuildHeader(names, tensors, dtypes, metadata);
        string temporaryPath = path + ".tmp";
        try
        {
            using (var stream = new FileStream(temporaryPath, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 1 << 20))
            {
                Span<byte> lengthBytes = stackalloc byte[8];
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(lengthBytes, (ulong)header.Length);
                stream.Write(lengthBytes);
                stream.Write(header);
                foreach (var name in names)
                {
                    var tensor = tensors[name];
                    using var detached = tensor.detach();
                    using var cpu = detached.cpu();
                    using var contiguous = cpu.contiguous();
                    TensorBytes.WriteFrom(contiguous, stream);
                }
            }
            File.Move(temporaryPath, path, overwrite: true);
        }
        catch
        {
            File.Delete(temporaryPath);
            throw;
        }
    }

    private static byte[] BuildHeader(
        List<string> names,
        IReadOnlyDictionary<string, torch.Tensor> tensors,
        Dictionary<string, SafeTensorsDType> dtypes,
        IReadOnlyDictionary<string, string>? metadata)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                writer.WriteStartObject("__metadata__");
                foreach (var (key, value) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                    writer.WriteString(key, value);
                writer.WriteEndObject();
            }

            long offset = 0;
            foreach (var name in names)
            {
                var tensor = tensors[name];
                long byteLength = tensor.numel() * dtypes[name].ElementSize();
                writer.WriteStartObject(name);
                writer.WriteString("dtype", dtypes[name].ToHeaderName());
                writer.WriteStartArray("shape");
                foreach (long dim in tensor.shape)
                    writer.WriteNumberValue(dim);
                writer.WriteEndArray();
                writer.WriteStartArray("data_offsets");
                writer.WriteNumberValue(offset);
                writer.WriteNumberValue(offset + byteLength);
                writer.WriteEndArray();
                writer.WriteEndObject();
                offset += byteLength;
            }
            writer.WriteEndObject();
        }

        // Pad with spaces so 8 + N is a multiple of 8: aligned data lets readers mmap tensors in place.
        int length = (int)buffer.Length;
        int padded = (length + 7) / 8 * 8;
        var header = new byte[padded];
        buffer.GetBuffer().AsSpan(0, length).CopyTo(header);
        header.AsSpan(length).Fill((byte)' ');
        return header;
    }

    /// <summary>Applies the optional float cast and device move, disposing the intermediate it replaces.</summary>
    internal static torch.Tensor ConvertAndMove(torch.Tensor tensor, torch.Device? device, torch.ScalarType? castTo)
    {
        var current = tensor;
        if (castTo is { } targetType && current.is_floating_point() && current.dtype != targetType)
            current = Replace(current, current.to_type(targetType));
        if (device is not null && current.device.ToString() != device.ToString())
            current = Replace(current, current.to(device));
        return current;
    }

    private static torch.Tensor Replace(torch.Tensor old, torch.Tensor replacement)
    {
        if (!ReferenceEquals(old, replacement))
            old.Dispose();
        return replacement;
    }

    internal static void EnsureLittleEndianHost()
    {
        // Both formats store little-endian bytes that we copy verbatim into tensors.
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("checkpoint loading assumes a little-endian host");
    }
}
