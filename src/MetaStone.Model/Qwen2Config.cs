using System.Text.Json;
using System.Text.Json.Nodes;

namespace MetaStone.Model;

/// <summary>
/// The fields of a Hugging Face Qwen2 <c>config.json</c> the decoder needs. Accepts both the classic
/// top-level <c>rope_theta</c> and the transformers ≥ 5 <c>rope_parameters</c> form.
/// </summary>
public sealed record Qwen2Config
{
    public required int VocabSize { get; init; }
    public required int HiddenSize { get; init; }
    public required int IntermediateSize { get; init; }
    public required int NumHiddenLayers { get; init; }
    public required int NumAttentionHeads { get; init; }
    public required int NumKeyValueHeads { get; init; }
    public int HeadDim { get; init; }
    public double RmsNormEps { get; init; } = 1e-6;
    public double RopeTheta { get; init; } = 10000.0;
    public bool TieWordEmbeddings { get; init; }
    public int MaxPositionEmbeddings { get; init; } = 32768;
    public string TorchDtype { get; init; } = "float32";
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    public int? BosTokenId { get; init; }

    public int KvGroups => NumAttentionHeads / NumKeyValueHeads;

    /// <summary>Non-embedding parameters plus the LM head (what a decode step multiplies through).</summary>
    public long DecoderParameterCount
    {
        get
        {
            long h = HiddenSize, kv = (long)NumKeyValueHeads * HeadDim, q = (long)NumAttentionHeads * HeadDim;
            long attn = h * q + q + 2 * (h * kv + kv) + q * h;
            long mlp = 3 * h * IntermediateSize;
            long layer = attn + mlp + 2 * h;
            return NumHiddenLayers * layer + h + (long)VocabSize * h;
        }
    }

    /// <summary>All parameters (embedding counted once when tied).</summary>
    public long ParameterCount => DecoderParameterCount + (TieWordEmbeddings ? 0 : (long)VocabSize * HiddenSize);

    public static Qwen2Config Load(string configPath)
    {
        if (!File.Exists(configPath))
            throw new FileNotFoundException($"model config not found: {configPath}", configPath);
        JsonNode? root;
        try { root = JsonNode.Parse(File.ReadAllText(configPath)); }
        catch (JsonException e) { throw new InvalidDataException($"{configPath}: not valid JSON: {e.Message}", e); }
        if (root is not JsonObject obj) throw new InvalidDataException($"{configPath}: expected a JSON object");
        return FromJson(obj, configPath);
    }

    public static Qwen2Config FromJson(JsonObject obj, string source = "config.json")
    {
        string? modelType = obj["model_type"]?.GetValue<string>();
        if (modelType is not null && modelType is not ("qwen2" or "qwen3" or "llama"))
            throw new InvalidDataException($"{source}: model_type '{modelType}' is not supported (expected qwen2)");

        int Req(string name) => obj[name] is JsonValue v && v.TryGetValue<int>(out var i)
            ? i
            : throw new InvalidDataException($"{source}: required integer field '{name}' is missing or not an integer");

        double ropeTheta = 10000.0;
        if (obj["rope_theta"] is JsonValue rt) ropeTheta = rt.GetValue<double>();
        if (obj["rope_parameters"] is JsonObject rp)
        {
            if (rp["rope_theta"] is JsonValue rpt) ropeTheta = rpt.GetValue<double>();
            CheckRopeType(rp["rope_type"]?.GetValue<string>(), source);
        }
        if (obj["rope_scaling"] is JsonObject rs)
            CheckRopeType(rs["rope_type"]?.GetValue<string>() ?? rs["type"]?.GetValue<string>(), source);

        var eos = new List<int>();
        switch (obj["eos_token_id"])
        {
            case JsonArray arr: eos.AddRange(arr.Select(n => n!.GetValue<int>())); break;
            case JsonValue v: eos.Add(v.GetValue<int>()); break;
        }

        int hidden = Req("hidden_size"), heads = Req("num_attention_heads");
        int kvHeads = obj["num_key_value_heads"] is JsonValue kvv ? kvv.GetValue<int>() : heads;
        var config = new Qwen2Config
        {
            VocabSize = Req("vocab_size"),
            HiddenSize = hidden,
            IntermediateSize = Req("intermediate_size"),
            NumHiddenLayers = Req("num_hidden_layers"),
            NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads,
            HeadDim = obj["head_dim"] is JsonValue hd ? hd.GetValue<int>() : hidden / heads,
            RmsNormEps = obj["rms_norm_eps"] is JsonValue eps ? eps.GetValue<double>() : 1e-6,
            RopeTheta = ropeTheta,
            TieWordEmbeddings = obj["tie_word_embeddings"] is JsonValue tie && tie.GetValue<bool>(),
            MaxPositionEmbeddings = obj["max_position_embeddings"] is JsonValue mp ? mp.GetValue<int>() : 32768,
            TorchDtype = obj["torch_dtype"]?.GetValue<string>() ?? obj["dtype"]?.GetValue<string>() ?? "float32",
            EosTokenIds = eos,
            BosTokenId = obj["bos_token_id"] is JsonValue b ? b.GetValue<int>() : null,
        };
        config.Validate(source);
        return config;
    }

    private static void CheckRopeType(string? type, string source)
    {
        if (type is not null && type != "default")
            throw new InvalidDataException($"{source}: rope type '{type}' is not supported (only 'default' RoPE)");
    }

    public void Validate(string source = "config")
    {
        void Positive(int v, string name)
        {
            if (v <= 0) throw new InvalidDataException($"{source}: {name} must be positive, got {v}");
        }
        Positive(VocabSize, "vocab_size");
        Positive(HiddenSize, "hidden_size");
        Positive(IntermediateSize, "intermediate_size");
        Positive(NumHiddenLayers, "num_hidden_layers");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(NumKeyValueHeads, "num_key_value_heads");
        Positive(HeadDim, "head_dim");
        if (NumAttentionHeads % NumKeyValueHeads != 0)
            throw new InvalidDataException($"{source}: num_attention_heads ({NumAttentionHeads}) must be a multiple of num_key_value_heads ({NumKeyValueHeads})");
        if (HeadDim % 2 != 0)
            throw new InvalidDataException($"{source}: head_dim ({HeadDim}) must be even for rotary embeddings");
    }

    public JsonObject ToJson() => new()
    {
        ["architectures"] = new JsonArray("Qwen2ForCausalLM"),
        ["model_type"] = "qwen2",
        ["vocab_size"] = VocabSize,
        ["hidden_size"] = HiddenSize,
        ["intermediate_size"] = IntermediateSize,
        ["num_hidden_layers"] = NumHiddenLayers,
        ["num_attention_heads"] = NumAttentionHeads,
        ["num_key_value_heads"] = NumKeyValueHeads,
        ["head_dim"] = HeadDim,
        ["rms_norm_eps"] = RmsNormEps,
        ["rope_theta"] = RopeTheta,
        ["tie_word_embeddings"] = TieWordEmbeddings,
        ["max_position_embeddings"] = MaxPositionEmbeddings,
        ["hidden_act"] = "silu",
        ["torch_dtype"] = TorchDtype,
        ["bos_token_id"] = BosTokenId,
        ["eos_token_id"] = EosTokenIds.Count == 1 ? EosTokenIds[0] : new JsonArray(EosTokenIds.Select(i => (JsonNode?)i).ToArray()),
        ["use_sliding_window"] = false,
    };

    public void Save(string path) =>
        File.WriteAllText(path, ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
}
