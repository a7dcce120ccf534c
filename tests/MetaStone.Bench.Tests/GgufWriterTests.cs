using MetaStone.Bench.Peer;

namespace MetaStone.Bench.Tests;

public sealed class GgufWriterTests
{
    private static Action<Stream> Bytes(byte[] data) => s => s.Write(data);

    private static byte[] Pattern(int length, int salt) => Enumerable.Range(0, length).Select(i => (byte)(i * 7 + salt)).ToArray();

    [Fact]
    public void Header_metadata_and_tensor_table_read_back_with_aligned_offsets()
    {
        // Sizes chosen so that no tensor ends on a 32-byte boundary: every offset needs padding.
        var a = Pattern(3 * 5 * 4, 1);      // F32 [3, 5]
        var b = Pattern(7 * 2, 2);          // BF16 [7]
        var c = Pattern(2 * 3 * 3 * 2, 3);  // F16 [2, 3, 3]
        var writer = new GgufWriter()
            .AddString("general.architecture", "qwen2")
            .AddUInt32("qwen2.block_count", 24)
            .AddFloat32("qwen2.rope.freq_base", 1e6f)
            .AddBool("tokenizer.ggml.add_bos_token", false)
            .AddStringArray("tokenizer.ggml.tokens", ["a", "Ġb", "<|im_end|>", "é"])
            .AddInt32Array("tokenizer.ggml.token_type", [1, 1, 3, -4])
            .AddTensor("first", [3, 5], GgmlType.F32, Bytes(a))
            .AddTensor("second", [7], GgmlType.BF16, Bytes(b))
            .AddTensor("third", [2, 3, 3], GgmlType.F16, Bytes(c));
        using var stream = new MemoryStream();
        writer.Write(stream);
        var file = GgufFile.Read(stream.ToArray());

        Assert.Equal(3u, file.Version);
        Assert.Equal("qwen2", file.Metadata["general.architecture"]);
        Assert.Equal(24u, file.Metadata["qwen2.block_count"]);
        Assert.Equal(1e6f, file.Metadata["qwen2.rope.freq_base"]);
        Assert.Equal(false, file.Metadata["tokenizer.ggml.add_bos_token"]);
        Assert.Equal(new object[] { "a", "Ġb", "<|im_end|>", "é" }, (List<object>)file.Metadata["tokenizer.ggml.tokens"]);
        Assert.Equal(new object[] { 1, 1, 3, -4 }, (List<object>)file.Metadata["tokenizer.ggml.token_type"]);

        Assert.Equal(["first", "second", "third"], file.Tensors.Select(t => t.Name));
        // ggml order: fastest varying dimension first (the PyTorch shape reversed).
        Assert.Equal([5L, 3L], file.Tensor("first").Ne);
        Assert.Equal([7L], file.Tensor("second").Ne);
        Assert.Equal([3L, 3L, 2L], file.Tensor("third").Ne);
        Assert.Equal([GgmlType.F32, GgmlType.BF16, GgmlType.F16], file.Tensors.Select(t => t.Type));

        Assert.Equal(0, file.DataStart % GgufWriter.Alignment);
        Assert.True(file.DataStart - file.HeaderEnd < GgufWriter.Alignment);
        Assert.All(file.Bytes[(int)file.HeaderEnd..(int)file.DataStart], pad => Assert.Equal(0, pad));
        Assert.Equal([0L, 64L, 96L], file.Tensors.Select(t => t.Offset)); // 60 → 64, 64 + 14 = 78 → 96
        Assert.All(file.Tensors, t => Assert.Equal(0, t.Offset % GgufWriter.Alignment));
        Assert.Equal(a, file.Data(file.Tensor("first")).ToArray());
        Assert.Equal(b, file.Data(file.Tensor("second")).ToArray());
        Assert.Equal(c, file.Data(file.Tensor("third")).ToArray());
        long dataStart = file.DataStart;
        Assert.All(file.Bytes[(int)(dataStart + 60)..(int)(dataStart + 64)], pad => Assert.Equal(0, pad));
        Assert.All(file.Bytes[(int)(dataStart + 78)..(int)(dataStart + 96)], pad => Assert.Equal(0, pad));
        Assert.Equal(dataStart + 160, file.Bytes.Length); // the last tensor (36 bytes at 96) is padded too
    }

    [Fact]
    public void A_tensor_writer_that_writes_the_wrong_byte_count_fails_the_file()
    {
        var writer = new GgufWriter().AddTensor("short", [4], GgmlType.F32, Bytes(new byte[15]));
        using var stream = new MemoryStream();
        var error = Assert.Throws<InvalidOperationException>(() => writer.Write(stream));
        Assert.Contains("'short'", error.Message);
        Assert.Contains("15 bytes", error.Message);
    }

    [Fact]
    public void Duplicate_keys_and_tensors_are_refused()
    {
        var writer = new GgufWriter().AddUInt32("k", 1).AddTensor("t", [1], GgmlType.F32, Bytes(new byte[4]));
        Assert.Throws<ArgumentException>(() => writer.AddUInt32("k", 2));
        Assert.Throws<ArgumentException>(() => writer.AddTensor("t", [1], GgmlType.F32, Bytes(new byte[4])));
        Assert.Throws<ArgumentException>(() => writer.AddTensor("u", [1, 2, 3, 4, 5], GgmlType.F32, Bytes(new byte[480])));
    }

    [Fact]
    public void A_file_written_to_disk_appears_only_when_complete()
    {
        string path = Path.Combine(Path.GetTempPath(), $"gguf-{Guid.NewGuid():N}.gguf");
        try
        {
            var failing = new GgufWriter().AddTensor("t", [2], GgmlType.F32, _ => throw new IOException("disk full"));
            Assert.Throws<IOException>(() => failing.Write(path));
            Assert.False(File.Exists(path));
            Assert.False(File.Exists(path + ".tmp"));
            new GgufWriter().AddTensor("t", [2], GgmlType.F32, Bytes(new byte[8])).Write(path);
            Assert.Equal(0, GgufFile.Read(File.ReadAllBytes(path)).Tensor("t").Offset);
        }
        finally { File.Delete(path); }
    }
}
