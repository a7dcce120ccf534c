using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace MetaStone.Model.Tests.Checkpoints;

/// <summary>Emits pickle opcodes by hand, to craft torch.save-shaped (and hostile) archives for the reader's tests.</summary>
internal sealed class PickleBuilder
{
    private readonly MemoryStream _bytes = new();

    public PickleBuilder Op(byte opcode)
    {
        _bytes.WriteByte(opcode);
        return this;
    }

    public PickleBuilder Proto(byte protocol) => Op(0x80).Op(protocol);

    /// <summary>A protocol-4 FRAME; the length is only a hint, readers must not depend on it.</summary>
    public PickleBuilder Frame(long length)
    {
        Op(0x95);
        Span<byte> buffer = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(buffer, length);
        _bytes.Write(buffer);
        return this;
    }

    public PickleBuilder Global(string module, string name) => Op((byte)'c').Raw(Encoding.ASCII.GetBytes($"{module}\n{name}\n"));

    public PickleBuilder StackGlobal(string module, string name) => ShortStr(module).ShortStr(name).Op(0x93);

    public PickleBuilder Str(string value)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(value);
        Op((byte)'X');
        Span<byte> length = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(length, (uint)utf8.Length);
        _bytes.Write(length);
        return Raw(utf8);
    }

    public PickleBuilder ShortStr(string value)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(value);
        return Op(0x8c).Op((byte)utf8.Length).Raw(utf8);
    }

    /// <summary>Small ints as BININT1/BININT2, others as LONG1 (which is how pickle writes big values).</summary>
    public PickleBuilder Int(long value)
    {
        if (value is >= 0 and < 256)
            return Op((byte)'K').Op((byte)value);
        if (value is >= 0 and < 65536)
            return Op((byte)'M').Op((byte)value).Op((byte)(value >> 8));
        Span<byte> buffer = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(buffer, value);
        Op(0x8a).Op(8);
        _bytes.Write(buffer);
        return this;
    }

    public PickleBuilder Mark() => Op((byte)'(');

    public PickleBuilder Tuple() => Op((byte)'t');

    public PickleBuilder Ints(IEnumerable<long> values)
    {
        Mark();
        foreach (long value in values)
            Int(value);
        return Tuple();
    }

    public PickleBuilder Memoize() => Op(0x94);

    public PickleBuilder Stop() => Op((byte)'.');

    /// <summary>What torch.save writes for one tensor: _rebuild_tensor_v2(persistent storage, offset, size, stride, False, OrderedDict()).</summary>
    public PickleBuilder Tensor(string storageType, string key, long storageElements, long offset, long[] size, long[] stride, bool protocol4 = false)
    {
        if (protocol4)
            StackGlobal("torch._utils", "_rebuild_tensor_v2").Memoize();
        else
            Global("torch._utils", "_rebuild_tensor_v2");
        Mark();
        Mark().Str("storage");
        if (protocol4)
            StackGlobal("torch", storageType);
        else
            Global("torch", storageType);
        Str(key).Str("cpu").Int(storageElements).Tuple().Op((byte)'Q');
        Int(offset).Ints(size).Ints(stride).Op(0x89);
        Global("collections", "OrderedDict").Op((byte)')').Op((byte)'R');
        Tuple();
        return Op((byte)'R');
    }

    public byte[] ToArray() => _bytes.ToArray();

    private PickleBuilder Raw(byte[] bytes)
    {
        _bytes.Write(bytes);
        return this;
    }

    /// <summary>Writes a torch.save-style zip: prefix/data.pkl, prefix/data/key storages, and PyTorch 2.x side records.</summary>
    public static void WriteArchive(string path, byte[] pickle, IReadOnlyDictionary<string, byte[]> storages, string byteOrder = "little")
    {
        using var archive = ZipFile.Open(path, ZipArchiveMode.Create);
        void Add(string name, byte[] content)
        {
            var entry = archive.CreateEntry("archive/" + name, CompressionLevel.NoCompression);
            using var stream = entry.Open();
            stream.Write(content);
        }
        Add("data.pkl", pickle);
        Add("byteorder", Encoding.ASCII.GetBytes(byteOrder));
        foreach (var (key, content) in storages)
            Add("data/" + key, content);
        Add("version", "3\n"u8.ToArray());
        Add(".data/serialization_id", Encoding.ASCII.GetBytes("1234567890"));
    }
}
