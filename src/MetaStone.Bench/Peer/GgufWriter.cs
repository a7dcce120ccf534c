using System.Buffers.Binary;
using System.Text;

namespace MetaStone.Bench.Peer;

/// <summary>GGUF metadata value types (gguf.h <c>gguf_type</c>).</summary>
public enum GgufValueType : uint
{
    UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7, String = 8, Array = 9,
    UInt64 = 10, Int64 = 11, Float64 = 12,
}

/// <summary>The ggml tensor types this writer stores (ggml.h <c>ggml_type</c>): unquantized only.</summary>
public enum GgmlType : uint
{
    F32 = 0,
    F16 = 1,
    BF16 = 30,
}

/// <summary>
/// Writes a GGUF v3 file (llama.cpp's model format), unquantized: a header, metadata key/values, a tensor table and the
/// tensor data, each tensor at a multiple of <see cref="Alignment"/> from the start of the data section.
/// </summary>
/// <remarks>
/// Layout (little-endian): "GGUF", version u32, tensor count u64, key/value count u64, then each key/value
/// (string key, u32 type, value), then each tensor (string name, u32 dimension count, u64 dimensions with the fastest
/// varying first — the reverse of a PyTorch shape —, u32 ggml type, u64 offset into the data section), padding to the
/// alignment, the data. Strings are a u64 byte length and UTF-8 bytes without a terminator; arrays are a u32 element
/// type, a u64 count and the elements. Tensor data is given as a callback that must write exactly the tensor's byte size.
/// </remarks>
public sealed class GgufWriter
{
    public const uint Magic = 0x46554747; // "GGUF" read as a little-endian u32
    public const uint Version = 3;
    /// <summary>llama.cpp's default (<c>general.alignment</c> when absent).</summary>
    public const int Alignment = 32;

    private readonly List<(string Key, GgufValueType Type, object Value)> _metadata = [];
    private readonly List<TensorEntry> _tensors = [];

    /// <param name="Shape">PyTorch order (slowest varying first); the file stores it reversed.</param>
    private sealed record TensorEntry(string Name, IReadOnlyList<long> Shape, GgmlType Type, Action<Stream> WriteData)
    {
        public long ByteLength => Shape.Aggregate(1L, (product, d) => product * d) * ElementSize(Type);
    }

    public static int ElementSize(GgmlType type) => type switch
    {
        GgmlType.F32 => 4,
        GgmlType.F16 or GgmlType.BF16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unsupported ggml type"),
    };

    public GgufWriter AddString(string key, string value) => Add(key, GgufValueType.String, value);
    public GgufWriter AddUInt32(string key, uint value) => Add(key, GgufValueType.UInt32, value);
    public GgufWriter AddFloat32(string key, float value) => Add(key, GgufValueType.Float32, value);
    public GgufWriter AddBool(string key, bool value) => Add(key, GgufValueType.Bool, value);
    public GgufWriter AddStringArray(string key, IReadOnlyList<string> values) => Add(key, GgufValueType.Array, (GgufValueType.String, (object)values));
    public GgufWriter AddInt32Array(string key, IReadOnlyList<int> values) => Add(key, GgufValueType.Array, (GgufValueType.Int32, (object)values));

    private GgufWriter Add(string key, GgufValueType type, object value)
    {
        if (_metadata.Any(m => m.Key == key)) throw new ArgumentException($"metadata key '{key}' added twice", nameof(key));
        _metadata.Add((key, type, value));
        return this;
    }

    /// <param name="shape">PyTorch order, e.g. [vocab, hidden] for an embedding.</param>
    /// <param name="writeData">Writes exactly the tensor's bytes (elements in row-major order of <paramref name="shape"/>).</param>
    public GgufWriter AddTensor(string name, IReadOnlyList<long> shape, GgmlType type, Action<Stream> writeData)
    {
        if (_tensors.Any(t => t.Name == name)) throw new ArgumentException($"tensor '{name}' added twice", nameof(name));
        if (shape.Count is < 1 or > 4 || shape.Any(d => d < 1)) throw new ArgumentException($"tensor '{name}': ggml needs 1–4 positive dimensions, got [{string.Join(", ", shape)}]", nameof(shape));
        _tensors.Add(new TensorEntry(name, shape.ToArray(), type, writeData));
        return this;
    }

    /// <summary>Writes the file through a temporary name, so a crash never leaves a truncated GGUF under the final name.</summary>
    public void Write(string path)
    {
        string temporary = path + ".tmp";
        try
        {
            using (var stream = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 1 << 20))
                Write(stream);
            File.Move(temporary, path, overwrite: true);
        }
        catch
        {
            File.Delete(temporary);
            throw;
        }
    }

    public void Write(Stream stream)
    {
        var header = new MemoryStream();
        WriteUInt32(header, Magic);
        WriteUInt32(header, Version);
        WriteUInt64(header, (ulong)_tensors.Count);
        WriteUInt64(header, (ulong)_metadata.Count);
        foreach (var (key, type, value) in _metadata)
        {
            WriteString(header, key);
            WriteUInt32(header, (uint)type);
            WriteValue(header, type, value);
        }
        long offset = 0;
        var offsets = new List<long>();
        foreach (var tensor in _tensors)
        {
            WriteString(header, tensor.Name);
            WriteUInt32(header, (uint)tensor.Shape.Count);
            for (int d = tensor.Shape.Count - 1; d >= 0; d--) WriteUInt64(header, (ulong)tensor.Shape[d]);
            WriteUInt32(header, (uint)tensor.Type);
            WriteUInt64(header, (ulong)offset);
            offsets.Add(offset);
            offset = AlignUp(offset + tensor.ByteLength);
        }
        WritePadding(header, header.Length);
        header.Position = 0;
        header.CopyTo(stream);

        long dataStart = header.Length;
        for (int i = 0; i < _tensors.Count; i++)
        {
            var tensor = _tensors[i];
            long before = CheckDataOffset(stream, dataStart, offsets[i]);
            tensor.WriteData(stream);
            long written = stream.Position - before;
            if (written != tensor.ByteLength)
                throw new InvalidOperationException($"tensor '{tensor.Name}': its writer wrote {written} bytes, the table says {tensor.ByteLength}");
            WritePadding(stream, written);
        }
        stream.Flush();
    }

    // The data of tensor i must start exactly where the table says (every tensor's padding was written after it).
    private static long CheckDataOffset(Stream stream, long dataStart, long expectedOffset)
    {
        if (stream.Position - dataStart != expectedOffset)
            throw new InvalidOperationException($"tensor data at offset {stream.Position - dataStart}, expected {expectedOffset}");
        return stream.Position;
    }

    public static long AlignUp(long value) => (value + Alignment - 1) / Alignment * Alignment;

    private static void WritePadding(Stream stream, long length)
    {
        long padding = AlignUp(length) - length;
        for (long i = 0; i < padding; i++) stream.WriteByte(0);
    }

    private static void WriteValue(Stream stream, GgufValueType type, object value)
    {
        switch (type)
        {
            case GgufValueType.String: WriteString(stream, (string)value); break;
            case GgufValueType.UInt32: WriteUInt32(stream, (uint)value); break;
            case GgufValueType.Int32: WriteUInt32(stream, unchecked((uint)(int)value)); break;
            case GgufValueType.Float32:
                Span<byte> f = stackalloc byte[4];
                BinaryPrimitives.WriteSingleLittleEndian(f, (float)value);
                stream.Write(f);
                break;
            case GgufValueType.Bool: stream.WriteByte((bool)value ? (byte)1 : (byte)0); break;
            case GgufValueType.Array:
                var (elementType, elements) = ((GgufValueType, object))value;
                WriteUInt32(stream, (uint)elementType);
                switch (elements)
                {
                    case IReadOnlyList<string> strings:
                        WriteUInt64(stream, (ulong)strings.Count);
                        foreach (var s in strings) WriteString(stream, s);
                        break;
                    case IReadOnlyList<int> ints:
                        WriteUInt64(stream, (ulong)ints.Count);
                        foreach (var i in ints) WriteUInt32(stream, unchecked((uint)i));
                        break;
                    default: throw new NotSupportedException($"array of {elements.GetType()}");
                }
                break;
            default: throw new NotSupportedException($"metadata type {type}");
        }
    }

    private static void WriteString(Stream stream, string value)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(value);
        WriteUInt64(stream, (ulong)bytes.Length);
        stream.Write(bytes);
    }

    private static void WriteUInt32(Stream stream, uint value)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        stream.Write(b);
    }

    private static void WriteUInt64(Stream stream, ulong value)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        stream.Write(b);
    }
}
