using System.Buffers.Binary;
using System.Text;
using MetaStone.Bench.Peer;

namespace MetaStone.Bench.Tests;

/// <summary>
/// A GGUF reader written for the tests from the format description (gguf.h / llama.cpp's gguf docs), independent of
/// <see cref="GgufWriter"/>: it checks what the writer promises by reading the bytes back.
/// </summary>
internal sealed class GgufFile
{
    public required uint Version { get; init; }
    public required Dictionary<string, object> Metadata { get; init; }
    public required List<GgufTensorInfo> Tensors { get; init; }
    /// <summary>Byte position where the data section starts (after the tensor table and its padding).</summary>
    public required long DataStart { get; init; }
    public required long HeaderEnd { get; init; }
    public required byte[] Bytes { get; init; }

    public GgufTensorInfo Tensor(string name) => Tensors.Single(t => t.Name == name);

    public ReadOnlySpan<byte> Data(GgufTensorInfo tensor) => Bytes.AsSpan((int)(DataStart + tensor.Offset), (int)tensor.ByteLength);

    public static GgufFile Read(byte[] bytes)
    {
        int pos = 0;
        uint U32() { uint v = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(pos)); pos += 4; return v; }
        ulong U64() { ulong v = BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(pos)); pos += 8; return v; }
        string Str() { int n = checked((int)U64()); string s = Encoding.UTF8.GetString(bytes, pos, n); pos += n; return s; }
        object Value(uint type) => type switch
        {
            0 => bytes[pos++],
            4 => U32(),
            5 => (int)U32(),
            6 => BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan((pos += 4) - 4)),
            7 => bytes[pos++] != 0,
            8 => Str(),
            10 => U64(),
            9 => ReadArray(),
            _ => throw new InvalidDataException($"value type {type} not expected in these files"),
        };
        object ReadArray()
        {
            uint elementType = U32();
            long count = checked((long)U64());
            var items = new List<object>();
            for (long i = 0; i < count; i++) items.Add(Value(elementType));
            return items;
        }

        Assert.Equal("GGUF"u8.ToArray(), bytes[..4]);
        pos = 4;
        uint version = U32();
        long tensorCount = (long)U64(), kvCount = (long)U64();
        var metadata = new Dictionary<string, object>();
        for (long i = 0; i < kvCount; i++)
        {
            string key = Str();
            metadata.Add(key, Value(U32()));
        }
        var tensors = new List<GgufTensorInfo>();
        for (long i = 0; i < tensorCount; i++)
        {
            string name = Str();
            uint dims = U32();
            var ne = new long[dims];
            for (int d = 0; d < dims; d++) ne[d] = (long)U64();
            tensors.Add(new GgufTensorInfo(name, ne, (GgmlType)U32(), (long)U64()));
        }
        long headerEnd = pos;
        uint alignment = metadata.TryGetValue("general.alignment", out var a) ? (uint)a : 32u;
        long dataStart = (headerEnd + alignment - 1) / alignment * alignment;
        return new GgufFile { Version = version, Metadata = metadata, Tensors = tensors, DataStart = dataStart, HeaderEnd = headerEnd, Bytes = bytes };
    }
}

/// <param name="Ne">ggml dimensions, fastest varying first.</param>
internal sealed record GgufTensorInfo(string Name, long[] Ne, GgmlType Type, long Offset)
{
    public long ByteLength => Ne.Aggregate(1L, (p, d) => p * d) * (Type == GgmlType.F32 ? 4 : 2);
}
