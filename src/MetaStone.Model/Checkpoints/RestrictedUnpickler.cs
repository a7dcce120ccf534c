using System.Buffers.Binary;
using System.Text;
using TorchSharp;

namespace MetaStone.Model.Checkpoints;

/// <summary>A pickle global that passed the allow-list; REDUCE interprets it, nothing is ever looked up or invoked.</summary>
internal sealed record PickleGlobal(string Module, string Name)
{
    public string QualifiedName => Module + "." + Name;
}

internal sealed record PickleTuple(IReadOnlyList<object?> Items);

/// <summary>A dict or OrderedDict; keeps insertion order, which a state dict's key order relies on.</summary>
internal sealed class PickleDict
{
    private readonly Dictionary<object, int> _positions = [];

    public List<KeyValuePair<object, object?>> Items { get; } = [];

    public void Set(object? key, object? value, string file)
    {
        if (key is null)
            throw new CheckpointFormatException($"torch checkpoint '{file}': pickle dict key is None");
        // Python semantics: re-setting a key keeps its original position.
        if (_positions.TryGetValue(key, out int existing))
        {
            Items[existing] = new(key, value);
        }
        else
        {
            _positions.Add(key, Items.Count);
            Items.Add(new(key, value));
        }
    }
}

/// <summary>The persistent id torch.save writes for a storage: ('storage', type, key, location, numel).</summary>
internal sealed record StorageReference(torch.ScalarType ScalarType, string Key, string Location, long ElementCount);

/// <summary>What <c>torch._utils._rebuild_tensor_v2</c> would build, kept as a description until storages are read.</summary>
internal sealed record TensorReference(StorageReference Storage, long StorageOffset, long[] Size, long[] Stride);

/// <summary>
/// A deliberately small unpickler for the opcodes torch.save emits for a state dict of plain tensors. It never
/// executes anything: GLOBAL names are checked against an allow-list the moment they are read (so a hostile
/// pickle fails before any later opcode), and REDUCE only recognises the allowed callables and builds plain
/// descriptions from their arguments. There is no reflection and no fallback to a general unpickler.
/// </summary>
internal sealed class RestrictedUnpickler
{
    private const int MaxStackDepth = 100_000;

    private static readonly Dictionary<string, torch.ScalarType> StorageTypes = new(StringComparer.Ordinal)
    {
        ["FloatStorage"] = torch.ScalarType.Float32,
        ["DoubleStorage"] = torch.ScalarType.Float64,
        ["HalfStorage"] = torch.ScalarType.Float16,
        ["BFloat16Storage"] = torch.ScalarType.BFloat16,
        ["LongStorage"] = torch.ScalarType.Int64,
        ["IntStorage"] = torch.ScalarType.Int32,
        ["ShortStorage"] = torch.ScalarType.Int16,
        ["CharStorage"] = torch.ScalarType.Int8,
        ["ByteStorage"] = torch.ScalarType.Byte,
        ["BoolStorage"] = torch.ScalarType.Bool,
    };

    private static readonly HashSet<(string Module, string Name)> AllowedCallables =
    [
        ("collections", "OrderedDict"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
    ];

    private readonly byte[] _data;
    private readonly string _file;
    private readonly List<object?> _stack = [];
    private readonly List<int> _marks = [];
    private readonly Dictionary<long, object?> _memo = [];
    private int _position;

    private RestrictedUnpickler(byte[] data, string file)
    {
        _data = data;
        _file = file;
    }

    /// <summary>Unpickles <paramref name="data"/>; <paramref name="file"/> only names the source in errors.</summary>
    public static object? Load(byte[] data, string file) => new RestrictedUnpickler(data, file).Run();

    private object? Run()
    {
        while (true)
        {
            int opcodePosition = _position;
            byte opcode = ReadByte();
            switch (opcode)
            {
                case 0x80: // PROTO
                    byte protocol = ReadByte();
                    if (protocol > 5)
                        throw Error($"unsupported pickle protocol {protocol}");
                    break;
                case 0x95: // FRAME: an 8-byte length hint; the frame's opcodes simply follow.
                    ReadBytes(8);
                    break;
                case (byte)'.': // STOP
                    if (_stack.Count != 1 || _marks.Count != 0)
                        throw Error($"STOP with {_stack.Count} stack items and {_marks.Count} open marks");
                    return _stack[0];

                case (byte)'}': Push(new PickleDict()); break; // EMPTY_DICT
                case (byte)']': Push(new List<object?>()); break; // EMPTY_LIST
                case (byte)')': Push(new PickleTuple([])); break; // EMPTY_TUPLE
                case (byte)'(': _marks.Add(_stack.Count); break; // MARK
                case (byte)'N': Push(null); break; // NONE
                case 0x88: Push(true); break; // NEWTRUE
                case 0x89: Push(false); break; // NEWFALSE

                case (byte)'X': Push(ReadString(ReadUInt32())); break; // BINUNICODE
                case 0x8c: Push(ReadString(ReadByte())); break; // SHORT_BINUNICODE
                case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(ReadBytes(4))); break; // BININT
                case (byte)'K': Push((long)ReadByte()); break; // BININT1
                case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(ReadBytes(2))); break; // BININT2
                case 0x8a: Push(ReadLong1()); break; // LONG1
                case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(ReadBytes(8))); break; // BINFLOAT

                case (byte)'t': Push(new PickleTuple(PopToMark())); break; // TUPLE
                case 0x85: Push(new PickleTuple(PopMany(1))); break; // TUPLE1
                case 0x86: Push(new PickleTuple(PopMany(2))); break; // TUPLE2
                case 0x87: Push(new PickleTuple(PopMany(3))); break; // TUPLE3

                case (byte)'q': _memo[ReadByte()] = Peek(); break; // BINPUT
                case (byte)'r': _memo[ReadUInt32()] = Peek(); break; // LONG_BINPUT
                case 0x94: _memo[_memo.Count] = Peek(); break; // MEMOIZE
                case (byte)'h': Push(MemoGet(ReadByte())); break; // BINGET
                case (byte)'j': Push(MemoGet(ReadUInt32())); break; // LONG_BINGET

                case (byte)'c': // GLOBAL "module\nname\n"
                    Push(CheckGlobal(ReadLine(), ReadLine()));
                    break;
                case 0x93: // STACK_GLOBAL
                    {
                        var name = Pop();
                        var module = Pop();
                        if (module is not string moduleName || name is not string globalName)
                            throw Error("STACK_GLOBAL operands are not strings");
                        Push(CheckGlobal(moduleName, globalName));
                        break;
                    }

                case (byte)'Q': Push(PersistentLoad(Pop())); break; // BINPERSID
                case (byte)'R': // REDUCE
                    {
                        var arguments = Pop();
                        var callable = Pop();
                        Push(Reduce(callable, arguments));
                        break;
                    }
                case (byte)'b': // BUILD
                    {
                        Pop(); // state
                        // OrderedDict state is the state dict's `_metadata` attribute (per-module versions), which
                        // loading does not need; anything else being built is outside what this reader supports.
                        if (Peek() is not PickleDict)
                            throw Error($"BUILD on {Describe(Peek())} is not supported");
                        break;
                    }
                case (byte)'s': // SETITEM
                    {
                        var value = Pop();
                        var key = Pop();
                        AsDict(Peek(), "SETITEM").Set(key, value, _file);
                        break;
                    }
                case (byte)'u': // SETITEMS
                    {
                        var items = PopToMark();
                        if (items.Count % 2 != 0)
                            throw Error("SETITEMS with an odd number of items");
                        var dict = AsDict(Peek(), "SETITEMS");
                        for (int i = 0; i < items.Count; i += 2)
                            dict.Set(items[i], items[i + 1], _file);
                        break;
                    }
                case (byte)'a': // APPEND
                    {
                        var value = Pop();
                        AsList(Peek()).Add(value);
                        break;
                    }
                case (byte)'e': // APPENDS
                    {
                        var items = PopToMark();
                        AsList(Peek()).AddRange(items);
                        break;
                    }

                default:
                    throw Error($"unsupported pickle opcode 0x{opcode:x2} at byte {opcodePosition}");
            }
        }
    }

    /// <summary>The allow-list gate. Runs as soon as a GLOBAL is read, long before anything could use it.</summary>
    private PickleGlobal CheckGlobal(string module, string name)
    {
        bool allowed = AllowedCallables.Contains((module, name)) || (module == "torch" && StorageTypes.ContainsKey(name));
        if (!allowed)
            throw Error($"refuses to load: forbidden pickle global '{module}.{name}' (only state dicts of plain tensors are accepted)");
        return new PickleGlobal(module, name);
    }

    private StorageReference PersistentLoad(object? persistentId)
    {
        if (persistentId is not PickleTuple { Items: [string tag, PickleGlobal storageType, string key, string location, long elementCount] }
            || tag != "storage")
        {
            throw Error($"persistent id {Describe(persistentId)} is not ('storage', type, key, location, numel)");
        }
        if (storageType.Module != "torch" || !StorageTypes.TryGetValue(storageType.Name, out var scalarType))
            throw Error($"persistent id names '{storageType.QualifiedName}', which is not a storage type");
        if (elementCount < 0)
            throw Error($"storage '{key}' has negative element count {elementCount}");
        return new StorageReference(scalarType, key, location, elementCount);
    }

    private object Reduce(object? callable, object? arguments)
    {
        if (callable is not PickleGlobal function)
            throw Error($"REDUCE on {Describe(callable)}, which is not a callable global");
        if (arguments is not PickleTuple { Items: var args })
            throw Error($"REDUCE arguments for '{function.QualifiedName}' are not a tuple");

        switch (function.Module, function.Name)
        {
            case ("collections", "OrderedDict"):
                if (args.Count != 0)
                    throw Error("OrderedDict called with arguments");
                return new PickleDict();

            case ("torch._utils", "_rebuild_tensor_v2"):
                // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
                if (args.Count is < 6 or > 7
                    || args[0] is not StorageReference storage
                    || args[1] is not long storageOffset
                    || args[2] is not PickleTuple size
                    || args[3] is not PickleTuple stride
                    || args[4] is not bool
                    || args[5] is not PickleDict hooks)
                {
                    throw Error("_rebuild_tensor_v2 arguments are not (storage, offset, size, stride, requires_grad, hooks)");
                }
                if (hooks.Items.Count != 0)
                    throw Error("tensor has backward hooks, which a state dict never carries");
                return new TensorReference(storage, storageOffset, ToLongs(size, "size"), ToLongs(stride, "stride"));

            case ("torch._utils", "_rebuild_parameter"):
                // (data, requires_grad, backward_hooks): a Parameter is just its tensor for loading purposes.
                if (args.Count != 3 || args[0] is not TensorReference data || args[1] is not bool)
                    throw Error("_rebuild_parameter arguments are not (tensor, requires_grad, hooks)");
                return data;

            default:
                throw Error($"'{function.QualifiedName}' cannot be called");
        }
    }

    private long[] ToLongs(PickleTuple tuple, string what)
    {
        var values = new long[tuple.Items.Count];
        for (int i = 0; i < values.Length; i++)
            values[i] = tuple.Items[i] as long? ?? throw Error($"tensor {what} contains {Describe(tuple.Items[i])}, not an integer");
        return values;
    }

    private PickleDict AsDict(object? target, string opcode) =>
        target as PickleDict ?? throw Error($"{opcode} on {Describe(target)}, not a dict");

    private List<object?> AsList(object? target) =>
        target as List<object?> ?? throw Error($"APPEND on {Describe(target)}, not a list");

    private static string Describe(object? value) => value switch
    {
        null => "None",
        string s => $"'{s}'",
        PickleTuple t => $"a {t.Items.Count}-tuple",
        PickleGlobal g => $"'{g.QualifiedName}'",
        _ => value.GetType().Name,
    };

    private void Push(object? value)
    {
        if (_stack.Count >= MaxStackDepth)
            throw Error("pickle stack too deep");
        _stack.Add(value);
    }

    private object? Pop()
    {
        if (_stack.Count == 0 || (_marks.Count > 0 && _stack.Count == _marks[^1]))
            throw Error("pickle stack underflow");
        var value = _stack[^1];
        _stack.RemoveAt(_stack.Count - 1);
        return value;
    }

    private object? Peek()
    {
        if (_stack.Count == 0 || (_marks.Count > 0 && _stack.Count == _marks[^1]))
            throw Error("pickle stack underflow");
        return _stack[^1];
    }

    private List<object?> PopMany(int count)
    {
        var items = new object?[count];
        for (int i = count - 1; i >= 0; i--)
            items[i] = Pop();
        return [.. items];
    }

    private List<object?> PopToMark()
    {
        if (_marks.Count == 0)
            throw Error("pickle pops to a MARK that was never set");
        int mark = _marks[^1];
        _marks.RemoveAt(_marks.Count - 1);
        var items = _stack.GetRange(mark, _stack.Count - mark);
        _stack.RemoveRange(mark, _stack.Count - mark);
        return items;
    }

    private object? MemoGet(long index) =>
        _memo.TryGetValue(index, out var value) ? value : throw Error($"pickle memo {index} was never stored");

    private byte ReadByte() => ReadBytes(1)[0];

    private long ReadUInt32() => BinaryPrimitives.ReadUInt32LittleEndian(ReadBytes(4));

    private ReadOnlySpan<byte> ReadBytes(long count)
    {
        if (count < 0 || count > _data.Length - _position)
            throw Error($"pickle ends inside an opcode at byte {_position}");
        var span = _data.AsSpan(_position, (int)count);
        _position += (int)count;
        return span;
    }

    private string ReadString(long byteCount)
    {
        try
        {
            return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(ReadBytes(byteCount));
        }
        catch (DecoderFallbackException e)
        {
            throw new CheckpointFormatException($"torch checkpoint '{_file}': pickle string is not valid UTF-8", e);
        }
    }

    private string ReadLine()
    {
        int end = Array.IndexOf(_data, (byte)'\n', _position);
        if (end < 0)
            throw Error("pickle GLOBAL name is not newline-terminated");
        string line = Encoding.ASCII.GetString(_data, _position, end - _position);
        _position = end + 1;
        return line;
    }

    private long ReadLong1()
    {
        int length = ReadByte();
        if (length > 8)
            throw Error($"pickle LONG1 of {length} bytes does not fit 64 bits");
        var bytes = ReadBytes(length);
        if (length == 0)
            return 0;
        // Little-endian two's complement: sign-extend from the top byte.
        long value = (sbyte)bytes[length - 1];
        for (int i = length - 2; i >= 0; i--)
            value = (value << 8) | bytes[i];
        return value;
    }

    private CheckpointFormatException Error(string detail) => new($"torch checkpoint '{_file}': {detail}");
}
