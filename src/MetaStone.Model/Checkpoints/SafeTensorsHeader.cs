using System.Buffers.Binary;
using System.Text.Json;

namespace MetaStone.Model.Checkpoints;

/// <summary>One tensor's header entry. Offsets are relative to the data buffer that follows the header.</summary>
public sealed record SafeTensorsEntry(string Name, SafeTensorsDType DType, IReadOnlyList<long> Shape, long Begin, long End)
{
    public long ElementCount => Shape.Aggregate(1L, (product, dim) => product * dim);

    public long ByteLength => End - Begin;
}

/// <summary>
/// The validated header of a safetensors file. Nothing in it has been trusted before validation: every offset is
/// inside the file, sizes agree with shapes and dtypes, and no two tensors share bytes.
/// </summary>
public sealed class SafeTensorsHeader
{
    /// <summary>Headers past this are refused: real ones are kilobytes, and a huge one would only exhaust memory.</summary>
    public const long MaxHeaderBytes = 100L * 1024 * 1024;

    private SafeTensorsHeader(
        string path,
        long dataStart,
        long dataLength,
        IReadOnlyDictionary<string, string> metadata,
        IReadOnlyList<SafeTensorsEntry> entries)
    {
        Path = path;
        DataStart = dataStart;
        DataLength = dataLength;
        Metadata = metadata;
        Entries = entries;
        EntriesByName = entries.ToDictionary(e => e.Name, StringComparer.Ordinal);
    }

    public string Path { get; }

    /// <summary>File offset of the data buffer: 8 + header length.</summary>
    public long DataStart { get; }

    public long DataLength { get; }

    /// <summary>The optional <c>__metadata__</c> map (empty if absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Entries in data-buffer order (by begin offset).</summary>
    public IReadOnlyList<SafeTensorsEntry> Entries { get; }

    public IReadOnlyDictionary<string, SafeTensorsEntry> EntriesByName { get; }

    public static SafeTensorsHeader Read(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1);
        return Read(stream, path);
    }

    /// <summary>Reads and validates the header from the start of <paramref name="stream"/> (which must be seekable).</summary>
    public static SafeTensorsHeader Read(Stream stream, string path)
    {
        long fileLength = stream.Length;
        if (fileLength < 8)
            throw Error(path, $"the file is {fileLength} bytes, too short for the 8-byte header length");

        Span<byte> lengthBytes = stackalloc byte[8];
        stream.Position = 0;
        stream.ReadExactly(lengthBytes);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength > (ulong)(fileLength - 8))
            throw Error(path, $"header length {headerLength} runs past the end of the file ({fileLength} bytes)");
        if (headerLength > MaxHeaderBytes)
            throw Error(path, $"header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit");
        if (headerLength < 2)
            throw Error(path, $"header length {headerLength} is too small for a JSON object");

        var headerBytes = new byte[(int)headerLength];
        stream.ReadExactly(headerBytes);
        long dataStart = 8 + (long)headerLength;
        return Parse(headerBytes, path, dataStart, fileLength - dataStart);
    }

    private static SafeTensorsHeader Parse(byte[] headerBytes, string path, long dataStart, long dataLength)
    {
        JsonDocument document;
        try
        {
            // JsonDocument also rejects invalid UTF-8; trailing space padding is plain JSON whitespace.
            document = JsonDocument.Parse(headerBytes, new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException($"safetensors file '{path}': header is not valid UTF-8 JSON: {e.Message}", e);
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw Error(path, $"header is a JSON {root.ValueKind}, not an object");

            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var entries = new List<SafeTensorsEntry>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var property in root.EnumerateObject())
            {
                // JsonDocument keeps duplicate keys; a duplicate tensor name would make "which one?" ambiguous.
                if (!seen.Add(property.Name))
                    throw Error(path, $"header names '{property.Name}' twice");
                if (property.Name == "__metadata__")
                    ReadMetadata(property.Value, path, metadata);
                else
                    entries.Add(ParseEntry(property.Name, property.Value, path, dataLength));
            }

            // Sorted by (begin, end) so a zero-byte tensor sitting at another's start is not taken for an overlap.
            entries.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
            for (int i = 1; i < entries.Count; i++)
            {
                var previous = entries[i - 1];
                var current = entries[i];
                if (current.Begin < previous.End)
                {
                    throw Error(path,
                        $"tensor '{current.Name}' bytes [{current.Begin}, {current.End}) overlap tensor '{previous.Name}' bytes [{previous.Begin}, {previous.End})");
                }
            }

            return new SafeTensorsHeader(path, dataStart, dataLength, metadata, entries);
        }
    }

    private static void ReadMetadata(JsonElement value, string path, Dictionary<string, string> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw Error(path, "__metadata__ is not a JSON object");
        foreach (var item in value.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
                throw Error(path, $"__metadata__ value for '{item.Name}' is a JSON {item.Value.ValueKind}, not a string");
            metadata[item.Name] = item.Value.GetString()!;
        }
    }

    private static SafeTensorsEntry ParseEntry(string name, JsonElement value, string path, long dataLength)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw Error(path, name, $"entry is a JSON {value.ValueKind}, not an object");

        JsonElement dtypeElement = default, shapeElement = default, offsetsElement = default;
        bool hasDType = false, hasShape = false, hasOffsets = false;
        foreach (var field in value.EnumerateObject())
        {
            switch (field.Name)
            {
                case "dtype": dtypeElement = field.Value; hasDType = true; break;
                case "shape": shapeElement = field.Value; hasShape = true; break;
                case "data_offsets": offsetsElement = field.Value; hasOffsets = true; break;
                default: throw Error(path, name, $"unexpected field '{field.Name}'");
            }
        }
        if (!hasDType || !hasShape || !hasOffsets)
            throw Error(path, name, "entry needs 'dtype', 'shape' and 'data_offsets'");

        if (dtypeElement.ValueKind != JsonValueKind.String)
            throw Error(path, name, "'dtype' is not a string");
        string dtypeName = dtypeElement.GetString()!;
        var dtype = SafeTensorsDTypes.TryParse(dtypeName)
            ?? throw Error(path, name, dtypeName.StartsWith("F8", StringComparison.Ordinal)
                ? $"dtype '{dtypeName}' is not supported"
                : $"unknown dtype '{dtypeName}' (expected one of BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64)");

        if (shapeElement.ValueKind != JsonValueKind.Array)
            throw Error(path, name, "'shape' is not an array");
        var shape = new List<long>();
        long elementCount = 1;
        foreach (var dim in shapeElement.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt64(out long size) || size < 0)
                throw Error(path, name, $"shape entry {dim.GetRawText()} is not a non-negative integer");
            shape.Add(size);
            try
            {
                elementCount = checked(elementCount * size);
            }
            catch (OverflowException)
            {
                throw Error(path, name, "shape's element count overflows 64 bits");
            }
        }

        if (offsetsElement.ValueKind != JsonValueKind.Array || offsetsElement.GetArrayLength() != 2)
            throw Error(path, name, "'data_offsets' is not a [begin, end] pair");
        var begin = offsetsElement[0];
        var end = offsetsElement[1];
        if (begin.ValueKind != JsonValueKind.Number || !begin.TryGetInt64(out long beginOffset) || beginOffset < 0
            || end.ValueKind != JsonValueKind.Number || !end.TryGetInt64(out long endOffset) || endOffset < beginOffset)
        {
            throw Error(path, name, $"'data_offsets' {offsetsElement.GetRawText()} are not integers with 0 <= begin <= end");
        }
        if (endOffset > dataLength)
            throw Error(path, name, $"'data_offsets' [{beginOffset}, {endOffset}] end past the data buffer ({dataLength} bytes)");

        long expectedBytes;
        try
        {
            expectedBytes = checked(elementCount * dtype.ElementSize());
        }
        catch (OverflowException)
        {
            throw Error(path, name, "byte size overflows 64 bits");
        }
        if (endOffset - beginOffset != expectedBytes)
        {
            throw Error(path, name,
                $"'data_offsets' span {endOffset - beginOffset} bytes but shape [{string.Join(", ", shape)}] of {dtypeName} needs {expectedBytes}");
        }

        return new SafeTensorsEntry(name, dtype, shape, beginOffset, endOffset);
    }

    private static CheckpointFormatException Error(string path, string detail) =>
        new($"safetensors file '{path}': {detail}");

    private static CheckpointFormatException Error(string path, string tensorName, string detail) =>
        new($"safetensors file '{path}', tensor '{tensorName}': {detail}");
}
