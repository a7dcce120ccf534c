using System.Buffers.Binary;
using System.Text.Json;
using System.Text.Json.Nodes;
using MetaStone.Model;
using MetaStone.Model.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Bench.Peer;

/// <summary>Where <see cref="PeerCheckpoint.Write"/> put one random checkpoint, and how large each form is.</summary>
/// <param name="ModelDirectory">Hugging Face layout for our loader: config.json, model.safetensors (bf16), tokenizer files, score_module.safetensors.</param>
/// <param name="GgufBf16">The same weights for llama.cpp: 2-D tensors BF16, norms and biases F32 (as convert_hf_to_gguf.py writes them).</param>
/// <param name="GgufF32">The same weights for llama.cpp, all F32 (bf16 values widened exactly).</param>
public sealed record PeerCheckpointFiles(string ModelDirectory, string GgufBf16, string GgufF32)
{
    public string Safetensors => Path.Combine(ModelDirectory, "model.safetensors");
    public long SafetensorsBytes => new FileInfo(Safetensors).Length;
    public long GgufBf16Bytes => new FileInfo(GgufBf16).Length;
    public long GgufF32Bytes => new FileInfo(GgufF32).Length;
}

/// <summary>
/// A random-weight Qwen2 checkpoint written twice: as Hugging Face safetensors for our engine and as GGUF for llama.cpp,
/// with the same values (bf16; the F32 GGUF widens them exactly), the same tokenizer, and llama.cpp's tensor names.
/// </summary>
/// <remarks>
/// Weights follow Hugging Face's Qwen2 initialisation (matrices N(0, 0.02), biases 0, norm weights 1), so the distributions
/// are as flat as an untrained 0.5B model's. Qwen2 needs no q/k permutation in GGUF (convert_hf_to_gguf.py permutes only
/// LLaMA-style checkpoints whose rotary embedding interleaves); llama.cpp's qwen2 graph uses the NEOX (rotate-half) rope,
/// which is ours.
/// </remarks>
public static class PeerCheckpoint
{
    public const string StampName = "checkpoint.json";
    public const double InitStd = 0.02;
    /// <summary>llama.cpp's <c>LLAMA_FTYPE_MOSTLY_BF16</c> and <c>LLAMA_FTYPE_ALL_F32</c> (<c>general.file_type</c>).</summary>
    private const uint FileTypeBf16 = 32, FileTypeF32 = 0;

    /// <summary>Qwen2-0.5B's exact shape: 24 layers, hidden 896, 14 heads / 2 KV heads of 64, FFN 4864, tied embeddings, vocabulary 151,936.</summary>
    public static Qwen2Config Qwen2HalfB(IReadOnlyList<int> eosTokenIds, int? bosTokenId) => new()
    {
        VocabSize = 151_936, HiddenSize = 896, IntermediateSize = 4864, NumHiddenLayers = 24,
        NumAttentionHeads = 14, NumKeyValueHeads = 2, HeadDim = 64, RopeTheta = 1_000_000, RmsNormEps = 1e-6,
        TieWordEmbeddings = true, MaxPositionEmbeddings = 32_768, TorchDtype = "bfloat16", EosTokenIds = eosTokenIds, BosTokenId = bosTokenId,
    };

    /// <summary>
    /// Writes the checkpoint into <paramref name="directory"/> (model/, model-bf16.gguf, model-f32.gguf) unless a complete one of the
    /// same shape and seed is already there (its <see cref="StampName"/> is written last).
    /// </summary>
    /// <param name="shape">The shape; <see cref="Qwen2Config.EosTokenIds"/> and <see cref="Qwen2Config.BosTokenId"/> are taken from the tokenizer.</param>
    /// <param name="tokenizerDirectory">Holds tokenizer.json and tokenizer_config.json (copied into the model directory and converted into the GGUF).</param>
    public static PeerCheckpointFiles Write(string directory, Qwen2Config shape, string tokenizerDirectory, long seed, Action<string> log)
    {
        Directory.CreateDirectory(directory);
        var files = new PeerCheckpointFiles(Path.Combine(directory, "model"), Path.Combine(directory, "model-bf16.gguf"), Path.Combine(directory, "model-f32.gguf"));
        string tokenizerJson = Path.Combine(tokenizerDirectory, "tokenizer.json");
        if (!File.Exists(tokenizerJson)) throw new ArgumentException($"no tokenizer.json in {tokenizerDirectory} (tests/tools/fetch-qwen-tokenizer.sh fetches Qwen's)");

        var vocabulary = GgufVocabulary.FromTokenizerJson(tokenizerJson, shape.VocabSize);
        int endOfText = vocabulary.IdOf("<|endoftext|>") ?? throw new InvalidDataException($"{tokenizerJson} has no <|endoftext|> token");
        int imEnd = vocabulary.IdOf("<|im_end|>") ?? endOfText;
        var config = shape with { EosTokenIds = imEnd == endOfText ? [endOfText] : [imEnd, endOfText], BosTokenId = endOfText, TorchDtype = "bfloat16" };

        string stampPath = Path.Combine(directory, StampName);
        string stamp = new JsonObject
        {
            ["config"] = config.ToJson(), ["seed"] = seed, ["initStd"] = InitStd,
            ["tokenizerBytes"] = new FileInfo(tokenizerJson).Length,
        }.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
        if (File.Exists(stampPath) && File.ReadAllText(stampPath) == stamp
            && File.Exists(files.Safetensors) && File.Exists(files.GgufBf16) && File.Exists(files.GgufF32))
        {
            log($"reusing the random checkpoint in {directory}");
            return files;
        }
        File.Delete(stampPath);

        Directory.CreateDirectory(files.ModelDirectory);
        config.Save(Path.Combine(files.ModelDirectory, "config.json"));
        File.Copy(tokenizerJson, Path.Combine(files.ModelDirectory, "tokenizer.json"), overwrite: true);
        string tokenizerConfig = Path.Combine(tokenizerDirectory, "tokenizer_config.json");
        if (File.Exists(tokenizerConfig)) File.Copy(tokenizerConfig, Path.Combine(files.ModelDirectory, "tokenizer_config.json"), overwrite: true);

        log($"writing random weights ({config.ParameterCount / 1e6:F0} M parameters, bf16) to {files.Safetensors} …");
        var generator = new Generator((ulong)seed);
        var weights = HuggingFaceShapes(config).ToDictionary(kv => kv.Key, kv => RandomTensor(kv.Key, kv.Value, generator));
        try { SafeTensors.Save(files.Safetensors, weights); }
        finally { foreach (var t in weights.Values) t.Dispose(); }

        // The SPRM head `generate` needs; random too (its scores are not what the peer bench measures).
        manual_seed(seed);
        using (var head = new SprmHead(config.HiddenSize, CPU))
        {
            var state = head.StateDict();
            try { SafeTensors.Save(Path.Combine(files.ModelDirectory, ReflectiveModel.HeadSafetensorsName), state); }
            finally { foreach (var t in state.Values) t.Dispose(); }
        }

        var header = SafeTensors.ReadHeader(files.Safetensors);
        log($"writing {files.GgufBf16} …");
        WriteGguf(files.GgufBf16, config, vocabulary, header, GgmlType.BF16, "metastone peer bench random Qwen2-0.5B shape (bf16)");
        log($"writing {files.GgufF32} …");
        WriteGguf(files.GgufF32, config, vocabulary, header, GgmlType.F32, "metastone peer bench random Qwen2-0.5B shape (f32)");
        File.WriteAllText(stampPath, stamp);
        return files;
    }

    /// <summary>Every decoder tensor under its Hugging Face name with its PyTorch shape (no lm_head when tied).</summary>
    public static IEnumerable<KeyValuePair<string, long[]>> HuggingFaceShapes(Qwen2Config c)
    {
        long h = c.HiddenSize, q = (long)c.NumAttentionHeads * c.HeadDim, kv = (long)c.NumKeyValueHeads * c.HeadDim, f = c.IntermediateSize;
        yield return new("model.embed_tokens.weight", [c.VocabSize, h]);
        for (int i = 0; i < c.NumHiddenLayers; i++)
        {
            string p = $"model.layers.{i}.";
            yield return new(p + "input_layernorm.weight", [h]);
            yield return new(p + "self_attn.q_proj.weight", [q, h]);
            yield return new(p + "self_attn.q_proj.bias", [q]);
            yield return new(p + "self_attn.k_proj.weight", [kv, h]);
            yield return new(p + "self_attn.k_proj.bias", [kv]);
            yield return new(p + "self_attn.v_proj.weight", [kv, h]);
            yield return new(p + "self_attn.v_proj.bias", [kv]);
            yield return new(p + "self_attn.o_proj.weight", [h, q]);
            yield return new(p + "post_attention_layernorm.weight", [h]);
            yield return new(p + "mlp.gate_proj.weight", [f, h]);
            yield return new(p + "mlp.up_proj.weight", [f, h]);
            yield return new(p + "mlp.down_proj.weight", [h, f]);
        }
        yield return new("model.norm.weight", [h]);
        if (!c.TieWordEmbeddings) yield return new("lm_head.weight", [c.VocabSize, h]);
    }

    /// <summary>llama.cpp's name of a Hugging Face Qwen2 tensor (convert_hf_to_gguf.py's tensor map).</summary>
    public static string GgufName(string huggingFaceName)
    {
        switch (huggingFaceName)
        {
            case "model.embed_tokens.weight": return "token_embd.weight";
            case "model.norm.weight": return "output_norm.weight";
            case "lm_head.weight": return "output.weight";
        }
        const string layers = "model.layers.";
        if (!huggingFaceName.StartsWith(layers, StringComparison.Ordinal)) throw new ArgumentException($"no GGUF name for '{huggingFaceName}'");
        int dot = huggingFaceName.IndexOf('.', layers.Length);
        string block = huggingFaceName[layers.Length..dot], rest = huggingFaceName[(dot + 1)..];
        string mapped = rest switch
        {
            "input_layernorm.weight" => "attn_norm.weight",
            "post_attention_layernorm.weight" => "ffn_norm.weight",
            "self_attn.q_proj.weight" => "attn_q.weight",
            "self_attn.q_proj.bias" => "attn_q.bias",
            "self_attn.k_proj.weight" => "attn_k.weight",
            "self_attn.k_proj.bias" => "attn_k.bias",
            "self_attn.v_proj.weight" => "attn_v.weight",
            "self_attn.v_proj.bias" => "attn_v.bias",
            "self_attn.o_proj.weight" => "attn_output.weight",
            "mlp.gate_proj.weight" => "ffn_gate.weight",
            "mlp.up_proj.weight" => "ffn_up.weight",
            "mlp.down_proj.weight" => "ffn_down.weight",
            _ => throw new ArgumentException($"no GGUF name for '{huggingFaceName}'"),
        };
        return $"blk.{block}.{mapped}";
    }

    private static Tensor RandomTensor(string name, long[] shape, Generator generator)
    {
        if (name.EndsWith("norm.weight", StringComparison.Ordinal)) return ones(shape, ScalarType.BFloat16);
        if (name.EndsWith(".bias", StringComparison.Ordinal)) return zeros(shape, ScalarType.BFloat16);
        using var values = randn(shape, generator: generator);
        using var std = InitStd.ToScalar(); // explicit: an implicit Scalar can be collected while libtorch reads it (TorchScalars)
        values.mul_(std);
        return values.to_type(ScalarType.BFloat16);
    }

    /// <summary>
    /// The GGUF llama.cpp would get from convert_hf_to_gguf.py for this checkpoint: qwen2 hyperparameters, the tokenizer as
    /// "gpt2" BPE with the "qwen2" pre-tokenizer, tensors copied from the safetensors file (matrices in <paramref name="matrixType"/>,
    /// 1-D tensors always F32).
    /// </summary>
    public static void WriteGguf(string path, Qwen2Config config, GgufVocabulary vocabulary, SafeTensorsHeader safetensors, GgmlType matrixType, string name)
    {
        if (matrixType is not (GgmlType.BF16 or GgmlType.F32)) throw new ArgumentException("matrices are BF16 or F32", nameof(matrixType));
        const string arch = "qwen2";
        var writer = new GgufWriter()
            .AddString("general.architecture", arch)
            .AddString("general.name", name)
            .AddUInt32("general.file_type", matrixType == GgmlType.BF16 ? FileTypeBf16 : FileTypeF32)
            .AddUInt32("general.alignment", GgufWriter.Alignment)
            .AddUInt32($"{arch}.context_length", (uint)config.MaxPositionEmbeddings)
            .AddUInt32($"{arch}.embedding_length", (uint)config.HiddenSize)
            .AddUInt32($"{arch}.block_count", (uint)config.NumHiddenLayers)
            .AddUInt32($"{arch}.feed_forward_length", (uint)config.IntermediateSize)
            .AddUInt32($"{arch}.attention.head_count", (uint)config.NumAttentionHeads)
            .AddUInt32($"{arch}.attention.head_count_kv", (uint)config.NumKeyValueHeads)
            .AddUInt32($"{arch}.attention.key_length", (uint)config.HeadDim)
            .AddUInt32($"{arch}.attention.value_length", (uint)config.HeadDim)
            .AddFloat32($"{arch}.rope.freq_base", (float)config.RopeTheta)
            .AddFloat32($"{arch}.attention.layer_norm_rms_epsilon", (float)config.RmsNormEps)
            .AddString("tokenizer.ggml.model", "gpt2")
            .AddString("tokenizer.ggml.pre", "qwen2")
            .AddStringArray("tokenizer.ggml.tokens", vocabulary.Tokens)
            .AddInt32Array("tokenizer.ggml.token_type", vocabulary.TokenTypes)
            .AddStringArray("tokenizer.ggml.merges", vocabulary.Merges);
        if (config.BosTokenId is int bos)
        {
            writer.AddUInt32("tokenizer.ggml.bos_token_id", (uint)bos).AddUInt32("tokenizer.ggml.padding_token_id", (uint)bos);
        }
        if (config.EosTokenIds.Count > 0) writer.AddUInt32("tokenizer.ggml.eos_token_id", (uint)config.EosTokenIds[0]);
        writer.AddBool("tokenizer.ggml.add_bos_token", false);

        foreach (var (hfName, shape) in HuggingFaceShapes(config))
        {
            var entry = safetensors.EntriesByName.TryGetValue(hfName, out var e) ? e
                : throw new InvalidDataException($"{safetensors.Path} has no tensor '{hfName}'");
            if (!entry.Shape.SequenceEqual(shape))
                throw new InvalidDataException($"{safetensors.Path}: '{hfName}' is [{string.Join(", ", entry.Shape)}], the config says [{string.Join(", ", shape)}]");
            if (entry.DType != SafeTensorsDType.BF16) throw new InvalidDataException($"{safetensors.Path}: '{hfName}' is {entry.DType}, expected BF16");
            var type = shape.Length >= 2 ? matrixType : GgmlType.F32;
            long begin = safetensors.DataStart + entry.Begin, length = entry.ByteLength;
            writer.AddTensor(GgufName(hfName), shape, type, output => CopyBf16(safetensors.Path, begin, length, type, output));
        }
        writer.Write(path);
    }

    /// <summary>Copies bf16 bytes as they are, or widens them to f32 (a bf16 is the high half of an f32: exact).</summary>
    private static void CopyBf16(string file, long begin, long length, GgmlType type, Stream output)
    {
        using var input = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1);
        input.Position = begin;
        var buffer = new byte[1 << 20];
        var widened = new byte[2 * buffer.Length];
        for (long left = length; left > 0;)
        {
            int n = (int)Math.Min(buffer.Length, left);
            input.ReadExactly(buffer, 0, n);
            left -= n;
            if (type == GgmlType.BF16) { output.Write(buffer, 0, n); continue; }
            for (int i = 0; i < n; i += 2)
            {
                ushort bits = BinaryPrimitives.ReadUInt16LittleEndian(buffer.AsSpan(i));
                BinaryPrimitives.WriteUInt32LittleEndian(widened.AsSpan(2 * i), (uint)bits << 16);
            }
            output.Write(widened, 0, 2 * n);
        }
    }
}
