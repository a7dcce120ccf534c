using System.Text.Json;
using MetaStone.Model.Checkpoints;
using TorchSharp;

namespace MetaStone.Model.Tests.Checkpoints;

public sealed class TorchZipCheckpointTests
{
    private static readonly Dictionary<string, long[]> HeadShapes = new()
    {
        ["0.weight"] = [128, 64],
        ["0.bias"] = [128],
        ["3.weight"] = [1, 128],
        ["3.bias"] = [1],
    };

    private static string Sprm(string name) => TestPaths.Fixture("sprm", name);

    private sealed record HeadReference(float[][] Input, float[] LogitsFp32, float[] LogitsFromBf16Weights);

    private static HeadReference ReadReference()
    {
        using var json = JsonDocument.Parse(File.ReadAllText(Sprm("score_module_reference.json")));
        var root = json.RootElement;
        float[] Floats(JsonElement e) => e.EnumerateArray().Select(x => x.GetSingle()).ToArray();
        return new HeadReference(
            root.GetProperty("input").EnumerateArray().Select(Floats).ToArray(),
            Floats(root.GetProperty("logits_fp32")),
            Floats(root.GetProperty("logits_from_bf16_weights_in_fp32")));
    }

    /// <summary>The SPRM head in eval mode: Linear → ReLU → (Dropout = identity) → Linear, in fp32.</summary>
    private static float[] HeadLogits(IReadOnlyDictionary<string, torch.Tensor> head, float[][] rows)
    {
        using var scope = torch.NewDisposeScope();
        var input = torch.tensor(rows.SelectMany(r => r).ToArray(), [rows.Length, rows[0].Length]);
        torch.Tensor Fp32(string name) => head[name].to_type(torch.ScalarType.Float32);
        var hidden = torch.nn.functional.relu(torch.nn.functional.linear(input, Fp32("0.weight"), Fp32("0.bias")));
        var logits = torch.nn.functional.linear(hidden, Fp32("3.weight"), Fp32("3.bias"));
        return logits.reshape(-1).data<float>().ToArray();
    }

    private static void AssertClose(float[] expected, float[] actual, double tolerance)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tolerance, $"row {i}: {actual[i]} vs reference {expected[i]}");
    }

    private static void AssertHeadLayout(IReadOnlyDictionary<string, torch.Tensor> head, torch.ScalarType dtype)
    {
        Assert.Equal(HeadShapes.Keys.Order(), head.Keys.Order());
        foreach (var (name, shape) in HeadShapes)
        {
            Assert.Equal(shape, head[name].shape);
            Assert.Equal(dtype, head[name].dtype);
            Assert.True(head[name].is_contiguous());
        }
    }

    [Fact]
    public void Fp32ScoreModuleLoadsAndReproducesReferenceLogits()
    {
        var head = TorchZipCheckpoint.Load(Sprm("score_module_fp32.pt"));
        try
        {
            AssertHeadLayout(head, torch.ScalarType.Float32);
            var reference = ReadReference();
            AssertClose(reference.LogitsFp32, HeadLogits(head, reference.Input), 1e-5);
        }
        finally
        {
            TensorAssert.DisposeAll(head.Values);
        }
    }

    [Fact]
    public void Bf16ScoreModuleLoadsAndReproducesBf16RoundedLogits()
    {
        var head = TorchZipCheckpoint.Load(Sprm("score_module_bf16.pt"));
        var fp32Head = TorchZipCheckpoint.Load(Sprm("score_module_fp32.pt"));
        try
        {
            AssertHeadLayout(head, torch.ScalarType.BFloat16);
            var reference = ReadReference();
            AssertClose(reference.LogitsFromBf16Weights, HeadLogits(head, reference.Input), 1e-4);

            // The bf16 file holds the fp32 weights rounded to bf16.
            foreach (var name in HeadShapes.Keys)
            {
                using var rounded = fp32Head[name].to_type(torch.ScalarType.BFloat16);
                TensorAssert.BitwiseEqual(rounded, head[name], name);
            }
        }
        finally
        {
            TensorAssert.DisposeAll(head.Values);
            TensorAssert.DisposeAll(fp32Head.Values);
        }
    }

    [Fact]
    public void CastToConvertsTheHeadOnLoad()
    {
        var head = TorchZipCheckpoint.Load(Sprm("score_module_bf16.pt"), castTo: torch.ScalarType.Float32);
        try
        {
            AssertHeadLayout(head, torch.ScalarType.Float32);
        }
        finally
        {
            TensorAssert.DisposeAll(head.Values);
        }
    }

    [Fact]
    public void HostileFixtureIsRefusedNamingTheForbiddenGlobal()
    {
        string path = Sprm("score_module_hostile.pt");
        var error = Assert.Throws<CheckpointFormatException>(() => TorchZipCheckpoint.Load(path));
        Assert.Contains("refuses to load: forbidden pickle global 'posix.system'", error.Message);
        Assert.Contains(path, error.Message);
    }

    [Fact]
    public void ForbiddenGlobalIsRefusedBeforeAnythingRuns()
    {
        using var dir = new TempDirectory();
        string marker = dir.File("pwned");
        // dict['x'] = os.system('touch <marker>'), the classic pickle payload.
        byte[] pickle = new PickleBuilder()
            .Proto(2).Op((byte)'}').Str("x")
            .Global("os", "system").Str("touch " + marker).Op(0x85).Op((byte)'R')
            .Op((byte)'s').Stop().ToArray();
        string path = dir.File("hostile.pt");
        PickleBuilder.WriteArchive(path, pickle, new Dictionary<string, byte[]>());

        var error = Assert.Throws<CheckpointFormatException>(() => TorchZipCheckpoint.Load(path));
        Assert.Contains("forbidden pickle global 'os.system'", error.Message);
        Assert.False(File.Exists(marker), "the payload ran");
    }

    [Theory]
    [InlineData("builtins", "eval")]
    [InlineData("builtins", "getattr")]
    [InlineData("subprocess", "Popen")]
    [InlineData("torch", "load")]
    [InlineData("torch._utils", "_rebuild_tensor_v3")]
    public void StackGlobalOutsideTheAllowListIsRefused(string module, string name)
    {
        using var dir = new TempDirectory();
        byte[] pickle = new PickleBuilder()
            .Proto(4).Frame(64).StackGlobal(module, name).Memoize().ShortStr("1+1").Op(0x85).Op((byte)'R').Stop().ToArray();
        string path = dir.File("hostile.pt");
        PickleBuilder.WriteArchive(path, pickle, new Dictionary<string, byte[]>());

        var error = Assert.Throws<CheckpointFormatException>(() => TorchZipCheckpoint.Load(path));
        Assert.Contains($"forbidden pickle global '{module}.{name}'", error.Message);
    }

    /// <summary>Storage of 12 floats 0..11 as raw little-endian bytes.</summary>
    private static byte[] CountingFloats(int count) =>
        Enumerable.Range(0, count).SelectMany(i => BitConverter.GetBytes((float)i)).ToArray();

    [Fact]
    public void StridedViewsWithOffsetsAndSharedStorageAreRebuilt()
    {
        using var dir = new TempDirectory();
        // Protocol-4 style pickle (FRAME, MEMOIZE, STACK_GLOBAL, SHORT_BINUNICODE) of
        // {"whole": storage[0:12], "view": as_strided(storage, (2, 3), (1, 2), offset 2), "big": int64 scalar}.
        var builder = new PickleBuilder().Proto(4).Frame(500).Op((byte)'}').Memoize().Mark();
        builder.ShortStr("whole").Tensor("FloatStorage", "0", 12, 0, [12], [1], protocol4: true);
        builder.ShortStr("view").Tensor("FloatStorage", "0", 12, 2, [2, 3], [1, 2], protocol4: true);
        builder.ShortStr("big").Tensor("LongStorage", "1", 1, 0, [], [], protocol4: true);
        byte[] pickle = builder.Op((byte)'u').Stop().ToArray();
        string path = dir.File("strided.pt");
        PickleBuilder.WriteArchive(path, pickle, new Dictionary<string, byte[]>
        {
            ["0"] = CountingFloats(12),
            ["1"] = BitConverter.GetBytes(1L << 40),
        });

        var tensors = TorchZipCheckpoint.Load(path);
        try
        {
            Assert.Equal(["whole", "view", "big"], tensors.Keys);
            Assert.Equal(Enumerable.Range(0, 12).Select(i => (float)i), tensors["whole"].data<float>().ToArray());
            Assert.Equal(new long[] { 2, 3 }, tensors["view"].shape);
            // element [i, j] = storage[2 + i + 2j]
            Assert.Equal(new float[] { 2, 4, 6, 3, 5, 7 }, tensors["view"].contiguous().data<float>().ToArray());
            Assert.Empty(tensors["big"].shape);
            Assert.Equal(1L << 40, tensors["big"].item<long>());
        }
        finally
        {
            TensorAssert.DisposeAll(tensors.Values);
        }
    }

    [Fact]
    public void ViewReachingPastItsStorageIsRejected()
    {
        using var dir = new TempDirectory();
        var builder = new PickleBuilder().Proto(2).Op((byte)'}').Str("w");
        builder.Tensor("FloatStorage", "0", 4, 1, [2, 2], [2, 1]);
        string path = dir.File("overrun.pt");
        PickleBuilder.WriteArchive(path, builder.Op((byte)'s').Stop().ToArray(), new Dictionary<string, byte[]> { ["0"] = CountingFloats(4) });

        var error = Assert.Throws<CheckpointFormatException>(() => TorchZipCheckpoint.Load(path));
        Assert.Contains("tensor 'w': view reaches element 4 of a 4-element storage", error.Message);
    }

    [Fact]
    public void StorageRecordOfWrongSizeIsRejected()
    {
        using var dir = new TempDirectory();
        var builder = new PickleBuilder().Proto(2).Op((byte)'}').Str("w");
        builder.Tensor("FloatStorage", "0", 4, 0, [4], [1]);
        string path = dir.File("short.pt");
        PickleBuilder.WriteArchive(path, builder.Op((byte)'s').Stop().ToArray(), new Dictionary<string, byte[]> { ["0"] = CountingFloats(3) });

        var error = Assert.Throws<CheckpointFormatException>(() => TorchZipCheckpoint.Load(path));
        Assert.Contains("tensor 'w': storage record 'archive/data/0' has 12 bytes, expected 16", error.Message);
    }

    [Fact]
    public void MissingStorageRecordIsRejected()
    {
        using var dir = new TempDirectory();
        var builder = new PickleBuilder().Proto(2).Op((byte)'}').Str("w");
        builder.Tensor("FloatStorage", "7", 4, 0, [4], [1]);
        string path = dir.File("missing.pt");
        PickleBuilder.WriteArchive(path, builder.Op((byte)'s').Stop().ToArray(), new Dictionary<string, byte[]>());

        var error = Assert.Throws<CheckpointFormatException>(() => TorchZipCheckpoint.Load(path));
        Assert.Contains("storage record 'archive/data/7' is missing", error.Message);
    }

    [Fact]
    public void BigEndianArchiveIsRejected()
    {
        using var dir = new TempDirectory();
        var builder = new PickleBuilder().Proto(2).Op((byte)'}').Str("w");
        builder.Tensor("FloatStorage", "0", 4, 0, [4], [1]);
        string path = dir.File("big-endian.pt");
        PickleBuilder.WriteArchive(path, builder.Op((byte)'s').Stop().ToArray(),
            new Dictionary<string, byte[]> { ["0"] = CountingFloats(4) }, byteOrder: "big");

        var error = Assert.Throws<CheckpointFormatException>(() => TorchZipCheckpoint.Load(path));
        Assert.Contains("byte order 'big'", error.Message);
    }

    [Fact]
    public void NonZipFileIsRejected()
    {
        using var dir = new TempDirectory();
        string path = dir.File("legacy.pt");
        File.WriteAllBytes(path, [0x80, 0x02, 0x8a, 0x0a]);
        var error = Assert.Throws<CheckpointFormatException>(() => TorchZipCheckpoint.Load(path));
        Assert.Contains("is not a zip archive", error.Message);
    }

    [Fact]
    public void TruncatedPickleIsRejected()
    {
        using var dir = new TempDirectory();
        string path = dir.File("truncated.pt");
        PickleBuilder.WriteArchive(path, new PickleBuilder().Proto(2).Op((byte)'}').Op((byte)'X').ToArray(), new Dictionary<string, byte[]>());
        var error = Assert.Throws<CheckpointFormatException>(() => TorchZipCheckpoint.Load(path));
        Assert.Contains("pickle ends inside an opcode", error.Message);
    }
}
