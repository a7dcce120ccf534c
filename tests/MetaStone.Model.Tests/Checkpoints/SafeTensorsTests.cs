using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using MetaStone.Model.Checkpoints;
using TorchSharp;

namespace MetaStone.Model.Tests.Checkpoints;

public sealed class SafeTensorsTests
{
    /// <summary>One tensor of each interesting kind: every TorchSharp dtype, a scalar, an empty and a strided view.</summary>
    internal static Dictionary<string, torch.Tensor> MakeMixedTensors()
    {
        torch.manual_seed(1234);
        using var wide = torch.randn(6, 4);
        return new Dictionary<string, torch.Tensor>
        {
            ["f32"] = torch.randn(3, 5),
            ["bf16"] = torch.randn(4, 7).to_type(torch.ScalarType.BFloat16),
            ["f16"] = torch.randn(2, 3, 2).to_type(torch.ScalarType.Float16),
            ["f64"] = torch.randn(5, dtype: torch.ScalarType.Float64),
            ["i64"] = torch.arange(-5, 7, dtype: torch.ScalarType.Int64).reshape(3, 4),
            ["i32"] = torch.arange(0, 10, dtype: torch.ScalarType.Int32),
            ["i16"] = torch.arange(-3, 3, dtype: torch.ScalarType.Int16),
            ["i8"] = torch.arange(-4, 4, dtype: torch.ScalarType.Int8),
            ["u8"] = torch.arange(250, 256, dtype: torch.ScalarType.Byte),
            ["bool"] = torch.tensor(new[] { true, false, true }),
            ["scalar"] = torch.tensor(3.25f),
            ["empty"] = torch.empty(0, 4),
            ["transposed"] = wide.t(),
            ["z.odd"] = torch.randn(3).to_type(torch.ScalarType.Float16),
        };
    }

    [Fact]
    public void RoundTripIsBitwiseEqualAcrossDtypesScalarAndEmpty()
    {
        using var dir = new TempDirectory();
        var original = MakeMixedTensors();
        try
        {
            string path = dir.File("mixed.safetensors");
            SafeTensors.Save(path, original, new Dictionary<string, string> { ["format"] = "pt" });

            var loaded = SafeTensors.Load(path);
            try
            {
                Assert.Equal(original.Keys.Order(), loaded.Keys.Order());
                foreach (var (name, tensor) in original)
                    TensorAssert.BitwiseEqual(tensor, loaded[name], name);
                Assert.Empty(loaded["scalar"].shape);
                Assert.Equal(new long[] { 0, 4 }, loaded["empty"].shape);
            }
            finally
            {
                TensorAssert.DisposeAll(loaded.Values);
            }

            var header = SafeTensors.ReadHeader(path);
            Assert.Equal("pt", header.Metadata["format"]);
            Assert.Equal(0, header.DataStart % 8);
            Assert.Equal(SafeTensorsDType.BF16, header.EntriesByName["bf16"].DType);
            Assert.Equal(SafeTensorsDType.Bool, header.EntriesByName["bool"].DType);
            Assert.Equal(new long[] { 4, 6 }, header.EntriesByName["transposed"].Shape);
        }
        finally
        {
            TensorAssert.DisposeAll(original.Values);
        }
    }

    [Fact]
    public void WriterSortsNamesPacksOffsetsAndPadsWithSpaces()
    {
        using var dir = new TempDirectory();
        string path = dir.File("layout.safetensors");
        using var b = torch.ones(3);
        using var a = torch.zeros(2, dtype: torch.ScalarType.Int64);
        SafeTensors.Save(path, new Dictionary<string, torch.Tensor> { ["b"] = b, ["a"] = a });

        byte[] file = File.ReadAllBytes(path);
        long headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(file);
        Assert.Equal(0, (8 + headerLength) % 8);
        string json = Encoding.UTF8.GetString(file, 8, (int)headerLength);
        string trimmed = json.TrimEnd(' ');
        Assert.EndsWith("}", trimmed);
        Assert.True(json.Length - trimmed.Length < 8, "padding is only what alignment needs");
        Assert.True(json.IndexOf("\"a\"", StringComparison.Ordinal) < json.IndexOf("\"b\"", StringComparison.Ordinal));

        var header = SafeTensors.ReadHeader(path);
        Assert.Equal(["a", "b"], header.Entries.Select(e => e.Name));
        Assert.Equal((0L, 16L), (header.Entries[0].Begin, header.Entries[0].End));
        Assert.Equal((16L, 28L), (header.Entries[1].Begin, header.Entries[1].End));
        Assert.Equal(8 + headerLength + 28, file.Length);
    }

    [Fact]
    public void CastToConvertsFloatsButKeepsIntegerTensors()
    {
        using var dir = new TempDirectory();
        string path = dir.File("cast.safetensors");
        using var weights = torch.randn(4, 4);
        using var ids = torch.arange(0, 4, dtype: torch.ScalarType.Int64);
        SafeTensors.Save(path, new Dictionary<string, torch.Tensor> { ["w"] = weights, ["ids"] = ids });

        var loaded = SafeTensors.Load(path, castTo: torch.ScalarType.BFloat16);
        try
        {
            Assert.Equal(torch.ScalarType.BFloat16, loaded["w"].dtype);
            Assert.Equal(torch.ScalarType.Int64, loaded["ids"].dtype);
            using var expected = weights.to_type(torch.ScalarType.BFloat16);
            TensorAssert.BitwiseEqual(expected, loaded["w"], "w");
        }
        finally
        {
            TensorAssert.DisposeAll(loaded.Values);
        }
    }

    [Fact]
    public void Qwen2FixtureLoadsWithConfigShapes()
    {
        string modelDir = TestPaths.Fixture("qwen2-tiny-random");
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(modelDir, "config.json")));
        var c = config.RootElement;
        long hidden = c.GetProperty("hidden_size").GetInt64();
        long vocab = c.GetProperty("vocab_size").GetInt64();
        long ffn = c.GetProperty("intermediate_size").GetInt64();
        long layers = c.GetProperty("num_hidden_layers").GetInt64();
        long headDim = hidden / c.GetProperty("num_attention_heads").GetInt64();
        long kvDim = headDim * c.GetProperty("num_key_value_heads").GetInt64();

        var expected = new Dictionary<string, long[]>
        {
            ["model.embed_tokens.weight"] = [vocab, hidden],
            ["model.norm.weight"] = [hidden],
            ["lm_head.weight"] = [vocab, hidden],
        };
        for (int i = 0; i < layers; i++)
        {
            string p = $"model.layers.{i}.";
            expected[p + "input_layernorm.weight"] = [hidden];
            expected[p + "post_attention_layernorm.weight"] = [hidden];
            expected[p + "self_attn.q_proj.weight"] = [hidden, hidden];
            expected[p + "self_attn.q_proj.bias"] = [hidden];
            expected[p + "self_attn.k_proj.weight"] = [kvDim, hidden];
            expected[p + "self_attn.k_proj.bias"] = [kvDim];
            expected[p + "self_attn.v_proj.weight"] = [kvDim, hidden];
            expected[p + "self_attn.v_proj.bias"] = [kvDim];
            expected[p + "self_attn.o_proj.weight"] = [hidden, hidden];
            expected[p + "mlp.gate_proj.weight"] = [ffn, hidden];
            expected[p + "mlp.up_proj.weight"] = [ffn, hidden];
            expected[p + "mlp.down_proj.weight"] = [hidden, ffn];
        }

        var header = SafeTensors.ReadHeader(Path.Combine(modelDir, "model.safetensors"));
        Assert.Equal("pt", header.Metadata["format"]);
        Assert.Equal(expected.Keys.Order(), header.EntriesByName.Keys.Order());

        var tensors = CheckpointDirectory.Load(modelDir);
        try
        {
            Assert.Equal(expected.Keys.Order(), tensors.Keys.Order());
            foreach (var (name, shape) in expected)
            {
                Assert.Equal(shape, tensors[name].shape);
                Assert.Equal(torch.ScalarType.Float32, tensors[name].dtype);
            }
            // Random init weights are small finite floats; bytes read from a wrong offset would rarely look like that.
            Assert.True(tensors["model.embed_tokens.weight"].isfinite().all().item<bool>());
            Assert.True(tensors["model.embed_tokens.weight"].abs().max().item<float>() < 100f);
        }
        finally
        {
            TensorAssert.DisposeAll(tensors.Values);
        }
    }

    // ---- corrupted headers ----

    /// <summary>Writes an 8-byte length, the header text and <paramref name="dataBytes"/> zero bytes.</summary>
    private static string WriteRaw(TempDirectory dir, string headerJson, int dataBytes, ulong? declaredLength = null)
    {
        byte[] header = Encoding.UTF8.GetBytes(headerJson);
        string path = dir.File("bad.safetensors");
        using var stream = File.Create(path);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, declaredLength ?? (ulong)header.Length);
        stream.Write(length);
        stream.Write(header);
        stream.Write(new byte[dataBytes]);
        return path;
    }

    private static CheckpointFormatException AssertRejected(string path)
    {
        var headerError = Assert.Throws<CheckpointFormatException>(() => SafeTensors.ReadHeader(path));
        Assert.Contains(path, headerError.Message);
        // Load validates the same way before touching data.
        var loadError = Assert.Throws<CheckpointFormatException>(() => SafeTensors.Load(path));
        Assert.Equal(headerError.Message, loadError.Message);
        return headerError;
    }

    [Fact]
    public void RejectsHeaderLengthPastEndOfFile()
    {
        using var dir = new TempDirectory();
        string path = WriteRaw(dir, "{}", 0, declaredLength: 1000);
        var error = AssertRejected(path);
        Assert.Contains("header length 1000 runs past the end of the file", error.Message);
    }

    [Fact]
    public void RejectsHugeHeaderLength()
    {
        using var dir = new TempDirectory();
        string path = WriteRaw(dir, "{}", 0, declaredLength: ulong.MaxValue);
        Assert.Contains("runs past the end of the file", AssertRejected(path).Message);
    }

    [Fact]
    public void RejectsFileShorterThanLengthPrefix()
    {
        using var dir = new TempDirectory();
        string path = dir.File("tiny.safetensors");
        File.WriteAllBytes(path, [1, 2, 3]);
        Assert.Contains("too short", AssertRejected(path).Message);
    }

    [Fact]
    public void RejectsOverlappingOffsets()
    {
        using var dir = new TempDirectory();
        string path = WriteRaw(dir,
            """{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""",
            16);
        var error = AssertRejected(path);
        Assert.Contains("tensor 'b' bytes [8, 16) overlap tensor 'a'", error.Message);
    }

    [Fact]
    public void RejectsUnknownDtype()
    {
        using var dir = new TempDirectory();
        string path = WriteRaw(dir, """{"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}""", 4);
        var error = AssertRejected(path);
        Assert.Contains("tensor 'w'", error.Message);
        Assert.Contains("unknown dtype 'F33'", error.Message);
    }

    [Fact]
    public void RejectsFloat8AsUnsupported()
    {
        using var dir = new TempDirectory();
        string path = WriteRaw(dir, """{"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}}""", 4);
        Assert.Contains("dtype 'F8_E4M3' is not supported", AssertRejected(path).Message);
    }

    [Fact]
    public void RejectsOffsetsOutOfBounds()
    {
        using var dir = new TempDirectory();
        string path = WriteRaw(dir, """{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", 12);
        var error = AssertRejected(path);
        Assert.Contains("tensor 'w'", error.Message);
        Assert.Contains("end past the data buffer (12 bytes)", error.Message);
    }

    [Fact]
    public void RejectsSizeMismatchWithShape()
    {
        using var dir = new TempDirectory();
        string path = WriteRaw(dir, """{"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,16]}}""", 16);
        var error = AssertRejected(path);
        Assert.Contains("tensor 'w'", error.Message);
        Assert.Contains("span 16 bytes but shape [2, 3] of BF16 needs 12", error.Message);
    }

    [Theory]
    [InlineData("""[1,2]""", "not an object")]
    [InlineData("""{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}""", "not a non-negative integer")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,0]}}""", "not a non-negative integer")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}""", "0 <= begin <= end")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1]}}""", "needs 'dtype', 'shape' and 'data_offsets'")]
    [InlineData("""{"__metadata__":{"format":1}}""", "not a string")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", "names 'w' twice")]
    [InlineData("""{"w": """, "not valid UTF-8 JSON")]
    public void RejectsMalformedHeaders(string headerJson, string expectedMessage)
    {
        using var dir = new TempDirectory();
        string path = WriteRaw(dir, headerJson, 8);
        Assert.Contains(expectedMessage, AssertRejected(path).Message);
    }

    [Fact]
    public void UnsignedWideDtypesParseButDoNotLoad()
    {
        using var dir = new TempDirectory();
        string path = WriteRaw(dir, """{"u":{"dtype":"U16","shape":[2],"data_offsets":[0,4]}}""", 4);
        Assert.Equal(SafeTensorsDType.U16, SafeTensors.ReadHeader(path).EntriesByName["u"].DType);
        var error = Assert.Throws<CheckpointFormatException>(() => SafeTensors.Load(path));
        Assert.Contains("tensor 'u': dtype U16 has no TorchSharp equivalent", error.Message);
    }

    [Fact]
    public void AcceptsSpacePaddedHeaderAndZeroSizedTensorAtAnotherStart()
    {
        using var dir = new TempDirectory();
        string path = WriteRaw(dir,
            """{"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}}      """,
            8);
        var loaded = SafeTensors.Load(path);
        try
        {
            Assert.Equal(new long[] { 0, 3 }, loaded["a"].shape);
            Assert.Equal(new[] { 0f, 0f }, loaded["b"].data<float>().ToArray());
        }
        finally
        {
            TensorAssert.DisposeAll(loaded.Values);
        }
    }
}
