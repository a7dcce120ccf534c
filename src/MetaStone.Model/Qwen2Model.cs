using MetaStone.Model.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace MetaStone.Model;

#pragma warning disable IDE1006 // field names are the Hugging Face parameter names (RegisterComponents uses them)

/// <summary>
/// Root-mean-square norm, entirely in fp32: statistics, normalisation and the scale by the weight, returning fp32.
/// Hugging Face rounds the normalised value to the model dtype before scaling; scaling in fp32 and letting the caller round
/// once (to feed the next matmul) is one bf16 rounding fewer, as llama.cpp does.
/// </summary>
public sealed class RmsNorm : nn.Module
{
    private readonly Parameter weight;
    private readonly double _eps;

    public RmsNorm(int size, double eps, ScalarType dtype, Device device) : base(nameof(RmsNorm))
    {
        weight = nn.Parameter(ones(size, dtype: dtype, device: device));
        _eps = eps;
        RegisterComponents();
    }

    /// <summary>x in any dtype → fp32.</summary>
    public Tensor Forward(Tensor x)
    {
        var x32 = x.to_type(ScalarType.Float32);
        // No implicit Scalars (x.square() is pow(2), "+ eps" converts eps): see TorchScalars.
        var normed = x32 * rsqrt((x32 * x32).mean([-1], keepdim: true).Plus(_eps));
        return normed * weight.to_type(ScalarType.Float32);
    }
}

internal static class Qwen2Layers
{
    /// <summary>nn.Linear, or with <paramref name="initialize"/> false the same module over uninitialised parameters.</summary>
    public static Linear Linear(int inFeatures, int outFeatures, bool hasBias, ScalarType dtype, Device device, bool initialize) => initialize
        ? nn.Linear(inFeatures, outFeatures, hasBias: hasBias, device: device, dtype: dtype)
        : nn.Linear(
            new Parameter(empty(outFeatures, inFeatures, dtype: dtype, device: device)),
            hasBias ? new Parameter(empty(outFeatures, dtype: dtype, device: device)) : null);
}

/// <summary>Where the keys and values of one forward pass come from and go to.</summary>
internal abstract record AttentionPlan
{
    /// <summary>No cache: causal attention over the given tokens only (training, re-encoding, references).</summary>
    public sealed record Full(Tensor? PaddingMask) : AttentionPlan;

    /// <summary>One sequence: tokens at [Start, Start+T) of a cache slot; earlier positions already cached.</summary>
    public sealed record Prefill(KvCache Cache, int Slot, int Start) : AttentionPlan;

    /// <summary>One new token for each of B slots at its own position.</summary>
    /// <param name="FirstSlot">When the slots are one ascending run, its first slot: the cache is then read with a
    /// view (narrow) instead of an index_select copy of every row.</param>
    public sealed record Decode(KvCache Cache, Tensor Slots, Tensor FlatIndex, Tensor Mask, int KvLength, int? FirstSlot) : AttentionPlan;
}

public sealed class Qwen2Attention : nn.Module
{
    private readonly Linear q_proj, k_proj, v_proj, o_proj;
    private readonly int _heads, _kvHeads, _headDim, _layer;

    public Qwen2Attention(Qwen2Config c, int layer, ScalarType dtype, Device device) : this(c, layer, dtype, device, initialize: true) { }

    /// <param name="initialize">False leaves the weights uninitialised, for a model whose every parameter is loaded next.</param>
    public Qwen2Attention(Qwen2Config c, int layer, ScalarType dtype, Device device, bool initialize) : base(nameof(Qwen2Attention))
    {
        _heads = c.NumAttentionHeads;
        _kvHeads = c.NumKeyValueHeads;
        _headDim = c.HeadDim;
        _layer = layer;
        q_proj = Qwen2Layers.Linear(c.HiddenSize, _heads * _headDim, hasBias: true, dtype, device, initialize);
        k_proj = Qwen2Layers.Linear(c.HiddenSize, _kvHeads * _headDim, hasBias: true, dtype, device, initialize);
        v_proj = Qwen2Layers.Linear(c.HiddenSize, _kvHeads * _headDim, hasBias: true, dtype, device, initialize);
        o_proj = Qwen2Layers.Linear(_heads * _headDim, c.HiddenSize, hasBias: false, dtype, device, initialize);
        RegisterComponents();
    }

    /// <param name="x">Normalised input in the weights' dtype [B, T, H].</param>
    /// <param name="cos">fp32 rotary table rows [B, 1, T, hd] (and <paramref name="sin"/>).</param>
    /// <returns>The attention block's output in fp32 [B, T, H].</returns>
    /// <remarks>Mixed precision: the projections run in the weights' dtype; RoPE, the attention scores, softmax and the
    /// weighted sum run in fp32. Keys and values are rounded to the KV cache's dtype (the weights' dtype) in every plan,
    /// so a full forward sees exactly the keys and values a cached decode reads back.</remarks>
    internal Tensor Forward(Tensor x, Tensor cos, Tensor sin, AttentionPlan plan)
    {
        long b = x.shape[0], t = x.shape[1];
        var storage = x.dtype;
        var q = q_proj.forward(x).to_type(ScalarType.Float32).view(b, t, _heads, _headDim).transpose(1, 2);
        var k = k_proj.forward(x).to_type(ScalarType.Float32).view(b, t, _kvHeads, _headDim).transpose(1, 2);
        var v = v_proj.forward(x).to_type(storage).view(b, t, _kvHeads, _headDim); // [B, T, KV, hd] in the cache dtype
        q = Rotary.Apply(q, cos, sin);
        k = Rotary.Apply(k, cos, sin).to_type(storage); // [B, KV, T, hd]
        int groups = _heads / _kvHeads;
        Tensor attn;
        switch (plan)
        {
            case AttentionPlan.Full full:
            {
                var kk = k.to_type(ScalarType.Float32).repeat_interleave(groups, dim: 1);
                var vv = v.to_type(ScalarType.Float32).transpose(1, 2).repeat_interleave(groups, dim: 1);
                if (full.PaddingMask is null)
                {
                    attn = F.scaled_dot_product_attention(q, kk, vv, is_casual: true);
                }
                else
                {
                    // Causal AND key is not padding; [B, 1, T, T].
                    var causal = ones(t, t, dtype: ScalarType.Bool, device: x.device).tril();
                    var mask = causal.unsqueeze(0) & full.PaddingMask.unsqueeze(1);
                    attn = F.scaled_dot_product_attention(q, kk, vv, mask.unsqueeze(1));
                }
                break;
            }
            case AttentionPlan.Prefill pre:
            {
                var kc = pre.Cache.Keys(_layer)[pre.Slot];
                var vc = pre.Cache.Values(_layer)[pre.Slot];
                kc.narrow(0, pre.Start, t).copy_(k[0].transpose(0, 1));
                vc.narrow(0, pre.Start, t).copy_(v[0]);
                long kvLen = pre.Start + t;
                var kk = kc.narrow(0, 0, kvLen).to_type(ScalarType.Float32).transpose(0, 1).unsqueeze(0).repeat_interleave(groups, dim: 1);
                var vv = vc.narrow(0, 0, kvLen).to_type(ScalarType.Float32).transpose(0, 1).unsqueeze(0).repeat_interleave(groups, dim: 1);
                if (pre.Start == 0)
                {
                    attn = F.scaled_dot_product_attention(q, kk, vv, is_casual: true);
                }
                else
                {
                    // SDPA's causal flag is top-left aligned; continuing a sequence needs an explicit mask.
                    var rows = TorchScalars.Arange(pre.Start, kvLen, x.device).unsqueeze(1);
                    var cols = TorchScalars.Arange(0, kvLen, x.device).unsqueeze(0);
                    attn = F.scaled_dot_product_attention(q, kk, vv, (cols <= rows).unsqueeze(0).unsqueeze(0));
                }
                break;
            }
            case AttentionPlan.Decode dec:
            {
                var kc = dec.Cache.Keys(_layer);
                var vc = dec.Cache.Values(_layer);
                long slots = kc.shape[0], maxLen = kc.shape[1];
                // Write this step's rows: one index_copy_ into the [slots*maxLen, KV, hd] view.
                kc.view(slots * maxLen, _kvHeads, _headDim).index_copy_(0, dec.FlatIndex, k.squeeze(2));
                vc.view(slots * maxLen, _kvHeads, _headDim).index_copy_(0, dec.FlatIndex, v.squeeze(1));
                var kRows = kc.narrow(1, 0, dec.KvLength);
                var vRows = vc.narrow(1, 0, dec.KvLength);
                kRows = dec.FirstSlot is int first ? kRows.narrow(0, first, b) : kRows.index_select(0, dec.Slots);
                vRows = dec.FirstSlot is int first2 ? vRows.narrow(0, first2, b) : vRows.index_select(0, dec.Slots);
                var kk = kRows.to_type(ScalarType.Float32).permute(0, 2, 1, 3); // [B, KV, L, hd]
                var vv = vRows.to_type(ScalarType.Float32).permute(0, 2, 1, 3);
                // GQA without copying the cache: fold the query heads of one KV group into the query-length axis.
                var qg = q.reshape(b, _kvHeads, groups, _headDim);
                attn = F.scaled_dot_product_attention(qg, kk, vv, dec.Mask).reshape(b, _heads, 1, _headDim);
                break;
            }
            default:
                throw new InvalidOperationException("unknown attention plan");
        }
        return o_proj.forward(attn.transpose(1, 2).reshape(b, t, _heads * _headDim).to_type(storage)).to_type(ScalarType.Float32);
    }
}

public sealed class Qwen2Mlp : nn.Module
{
    private readonly Linear gate_proj, up_proj, down_proj;

    public Qwen2Mlp(Qwen2Config c, ScalarType dtype, Device device) : this(c, dtype, device, initialize: true) { }

    /// <param name="initialize">False leaves the weights uninitialised, for a model whose every parameter is loaded next.</param>
    public Qwen2Mlp(Qwen2Config c, ScalarType dtype, Device device, bool initialize) : base(nameof(Qwen2Mlp))
    {
        gate_proj = Qwen2Layers.Linear(c.HiddenSize, c.IntermediateSize, hasBias: false, dtype, device, initialize);
        up_proj = Qwen2Layers.Linear(c.HiddenSize, c.IntermediateSize, hasBias: false, dtype, device, initialize);
        down_proj = Qwen2Layers.Linear(c.IntermediateSize, c.HiddenSize, hasBias: false, dtype, device, initialize);
        RegisterComponents();
    }

    /// <summary>x in the weights' dtype → fp32; the gate (SiLU × up) is computed in fp32 and rounded once for down_proj.</summary>
    public Tensor Forward(Tensor x)
    {
        var gated = F.silu(gate_proj.forward(x).to_type(ScalarType.Float32)) * up_proj.forward(x).to_type(ScalarType.Float32);
        return down_proj.forward(gated.to_type(x.dtype)).to_type(ScalarType.Float32);
    }
}

public sealed class Qwen2DecoderLayer : nn.Module
{
    private readonly Qwen2Attention self_attn;
    private readonly Qwen2Mlp mlp;
    private readonly RmsNorm input_layernorm, post_attention_layernorm;

    public Qwen2DecoderLayer(Qwen2Config c, int layer, ScalarType dtype, Device device) : this(c, layer, dtype, device, initialize: true) { }

    /// <param name="initialize">False leaves the weights uninitialised, for a model whose every parameter is loaded next.</param>
    public Qwen2DecoderLayer(Qwen2Config c, int layer, ScalarType dtype, Device device, bool initialize) : base(nameof(Qwen2DecoderLayer))
    {
        self_attn = new Qwen2Attention(c, layer, dtype, device, initialize);
        mlp = new Qwen2Mlp(c, dtype, device, initialize);
        input_layernorm = new RmsNorm(c.HiddenSize, c.RmsNormEps, dtype, device);
        post_attention_layernorm = new RmsNorm(c.HiddenSize, c.RmsNormEps, dtype, device);
        RegisterComponents();
    }

    /// <param name="x">The residual stream, fp32 whatever the weights' dtype (as llama.cpp keeps it: a bf16 residual
    /// loses the small updates of every layer).</param>
    /// <param name="weightDtype">The dtype the matmuls run in.</param>
    internal Tensor Forward(Tensor x, Tensor cos, Tensor sin, AttentionPlan plan, ScalarType weightDtype)
    {
        var h = x.Plus(self_attn.Forward(input_layernorm.Forward(x).to_type(weightDtype), cos, sin, plan));
        return h.Plus(mlp.Forward(post_attention_layernorm.Forward(h).to_type(weightDtype)));
    }
}

/// <summary>Rotary position embedding (rotate-half form, as Hugging Face Qwen2).</summary>
internal static class Rotary
{
    /// <summary>cos/sin tables [maxPositions, headDim] in fp32.</summary>
    public static (Tensor Cos, Tensor Sin) Tables(int headDim, double theta, int maxPositions, Device device)
    {
        using var scope = NewDisposeScope();
        // inv_freq = theta^(-2i/d) in float64 on the host: no implicit Scalars (see TorchScalars).
        var invFreq = tensor(Enumerable.Range(0, (headDim + 1) / 2).Select(i => Math.Pow(theta, -(2.0 * i) / headDim)).ToArray(), dtype: ScalarType.Float64);
        var freqs = outer(TorchScalars.Arange(0, maxPositions, CPU, ScalarType.Float64), invFreq);
        var emb = cat([freqs, freqs], dim: -1);
        var cos = emb.cos().to_type(ScalarType.Float32).to(device);
        var sin = emb.sin().to_type(ScalarType.Float32).to(device);
        return (cos.MoveToOuterDisposeScope(), sin.MoveToOuterDisposeScope());
    }

    /// <summary>x [B, H, T, hd]; cos/sin [B, 1, T, hd] in x's dtype (fp32).</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        long half = x.shape[^1] / 2;
        var x1 = x.narrow(-1, 0, half);
        var x2 = x.narrow(-1, half, half);
        var rotated = cat([x2.neg(), x1], dim: -1);
        return (x * cos).Plus(rotated * sin); // not "+": its implicit alpha Scalar can be finalised mid-call (TorchScalars)
    }
}

/// <summary>What one forward pass returns.</summary>
/// <param name="Logits">fp32 logits: [B, V] for the last position of each row, or [B, T, V] when all were asked for.</param>
/// <param name="SprmFeatures">Hugging Face <c>hidden_states[-2]</c> (the raw residual stream entering the last
/// decoder layer) at the same positions as the logits, in fp32 (the residual stream is kept in fp32).</param>
public sealed record ForwardOutput(Tensor Logits, Tensor SprmFeatures);

/// <summary>
/// Qwen2 decoder with its LM head (tied or untied). Parameter names follow the Hugging Face checkpoint
/// layout (<c>model.layers.N.self_attn.q_proj.weight</c>, …), so state dicts load without renaming.
/// </summary>
public sealed class Qwen2ForCausalLM : nn.Module
{
    private readonly Qwen2Body model;
    private readonly Linear? lm_head;
    private readonly Tensor _ropeCos, _ropeSin;

    public Qwen2Config Config { get; }
    public ScalarType Dtype { get; }
    public Device Device { get; }

    public Qwen2ForCausalLM(Qwen2Config config, ScalarType dtype, Device device, int? ropePositions = null)
        : this(config, dtype, device, ropePositions, initializeWeights: true) { }

    /// <param name="initializeWeights">False skips TorchSharp's default (Kaiming) initialisation of every Linear, for a
    /// model whose parameters are all loaded right after (<see cref="Qwen2Loading.LoadWeights(Qwen2ForCausalLM, IReadOnlyDictionary{string, CheckpointTensorLocation})"/>
    /// checks that every one is in the checkpoint). On the 0.5B shape building the model took 13–29 s, more than reading the weights.</param>
    public Qwen2ForCausalLM(Qwen2Config config, ScalarType dtype, Device device, int? ropePositions, bool initializeWeights) : base(nameof(Qwen2ForCausalLM))
    {
        config.Validate();
        Config = config;
        Dtype = dtype;
        Device = device;
        model = new Qwen2Body(config, dtype, device, initializeWeights);
        if (!config.TieWordEmbeddings)
            lm_head = Qwen2Layers.Linear(config.HiddenSize, config.VocabSize, hasBias: false, dtype, device, initializeWeights);
        RegisterComponents();
        (_ropeCos, _ropeSin) = Rotary.Tables(config.HeadDim, config.RopeTheta, ropePositions ?? config.MaxPositionEmbeddings, device);
        _ropeCos = _ropeCos.DetachFromDisposeScope();
        _ropeSin = _ropeSin.DetachFromDisposeScope();
    }

    /// <summary>Longest sequence the precomputed rotary tables cover.</summary>
    public int MaxPositions => (int)_ropeCos.shape[0];

    /// <summary>Initialises weights as Hugging Face does for Qwen2 (normal(0, 0.02), norms at 1, biases 0).</summary>
    public void InitializeWeights(long seed)
    {
        using var _ = no_grad();
        var gen = new Generator((ulong)seed);
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith("layernorm.weight", StringComparison.Ordinal) || name == "model.norm.weight") p.FillWith(1);
            else if (name.EndsWith(".bias", StringComparison.Ordinal)) p.zero_();
            else p.normal_(0, 0.02, generator: gen);
        }
    }

    /// <summary>Full causal forward without a cache (training, re-encoding, reference checks).</summary>
    /// <param name="inputIds">[B, T] int64; rows right-padded when <paramref name="paddingMask"/> is given.</param>
    /// <param name="paddingMask">Optional [B, T] bool, true for real tokens.</param>
    /// <param name="allPositions">Return logits/features for every position instead of only the last.</param>
    public ForwardOutput ForwardFull(Tensor inputIds, Tensor? paddingMask = null, bool allPositions = true)
    {
        long t = inputIds.shape[1];
        CheckLength(t);
        var positions = TorchScalars.Arange(0, t, Device).unsqueeze(0).expand(inputIds.shape[0], t);
        return Run(inputIds, positions, new AttentionPlan.Full(paddingMask), allPositions);
    }

    /// <summary>Prefill (or continue) one sequence in a cache slot, starting at position <paramref name="start"/>.</summary>
    public ForwardOutput Prefill(Tensor inputIds, KvCache cache, int slot, int start, bool allPositions = false)
    {
        if (inputIds.shape[0] != 1) throw new ArgumentException("prefill takes one sequence ([1, T])", nameof(inputIds));
        long t = inputIds.shape[1];
        if (start + t > cache.MaxLength)
            throw new ArgumentException($"sequence of {start + t} tokens exceeds the cache length {cache.MaxLength}");
        CheckLength(start + t);
        var positions = TorchScalars.Arange(start, start + t, Device).unsqueeze(0);
        return Run(inputIds, positions, new AttentionPlan.Prefill(cache, slot, start), allPositions);
    }

    /// <summary>One decode step: token <paramref name="inputIds"/>[i] at position <paramref name="positions"/>[i] of slot <paramref name="slots"/>[i].</summary>
    public ForwardOutput Decode(Tensor inputIds, KvCache cache, ReadOnlySpan<long> slots, ReadOnlySpan<long> positions)
    {
        int b = slots.Length;
        long maxPos = 0;
        bool contiguous = true;
        var flat = new long[b];
        for (int i = 0; i < b; i++)
        {
            if (positions[i] >= cache.MaxLength) throw new ArgumentException($"position {positions[i]} exceeds the cache length {cache.MaxLength}");
            maxPos = Math.Max(maxPos, positions[i]);
            flat[i] = slots[i] * cache.MaxLength + positions[i];
            if (i > 0 && slots[i] != slots[i - 1] + 1) contiguous = false;
        }
        CheckLength(maxPos + 1);
        int kvLength = (int)maxPos + 1;
        var posT = tensor(positions.ToArray(), device: Device);
        var slotT = tensor(slots.ToArray(), device: Device);
        var flatT = tensor(flat, device: Device);
        // [B, 1, 1, L]: key j visible to row i iff j <= position_i (rows have different lengths).
        var mask = (TorchScalars.Arange(0, kvLength, Device).unsqueeze(0) <= posT.unsqueeze(1)).unsqueeze(1).unsqueeze(1);
        return Run(inputIds.view(b, 1), posT.view(b, 1), new AttentionPlan.Decode(cache, slotT, flatT, mask, kvLength, contiguous ? (int)slots[0] : null), allPositions: false);
    }

    private void CheckLength(long length)
    {
        if (length > MaxPositions)
            throw new ArgumentException($"sequence of {length} tokens is longer than the model's context window of {MaxPositions} tokens");
    }

    private ForwardOutput Run(Tensor inputIds, Tensor positions, AttentionPlan plan, bool allPositions)
    {
        // cos/sin gathered per row and position so rows at different positions share one batch; RoPE stays in fp32.
        var cos = _ropeCos.index_select(0, positions.reshape(-1)).view(positions.shape[0], 1, positions.shape[1], -1);
        var sin = _ropeSin.index_select(0, positions.reshape(-1)).view(positions.shape[0], 1, positions.shape[1], -1);
        var (final, features) = model.Forward(inputIds, cos, sin, plan, Dtype);
        if (!allPositions)
        {
            long t = final.shape[1];
            final = final.narrow(1, t - 1, 1).squeeze(1);
            features = features.narrow(1, t - 1, 1).squeeze(1);
        }
        var headWeight = lm_head is not null ? lm_head.weight! : model.EmbeddingWeight;
        var logits = F.linear(final.to_type(Dtype), headWeight).to_type(ScalarType.Float32);
        if (Dtype != ScalarType.Float32) logits = RefineLikeliest(logits, final, headWeight);
        return new ForwardOutput(logits, features);
    }

    /// <summary>How many of each row's likeliest logits <see cref="RefineLikeliest"/> recomputes in fp32.</summary>
    public const int RefinedLogits = 32;

    /// <summary>
    /// A bf16 matmul returns bf16: logits of magnitude 4–8 come back rounded by up to 0.016, which moves a probability of
    /// 0.5 by ~4e-3 (measured on the fixtures: top-5 |Δp| 1–2e-2 before this and the fp32 residual stream). TorchSharp has
    /// no bf16 × bf16 → fp32 matmul, and an fp32 copy of the head would cost its size again in memory and fp32 matmul time,
    /// so the row's likeliest logits are recomputed as fp32 dot products of the fp32 hidden state with their (exact, bf16)
    /// weight rows: B × 32 rows gathered, against a [B, V] matmul. The others keep their bf16 rounding; they enter only the
    /// softmax's normaliser, where their independent errors mostly cancel.
    /// </summary>
    private static Tensor RefineLikeliest(Tensor logits, Tensor hidden, Tensor headWeight)
    {
        int refined = (int)Math.Min(RefinedLogits, logits.shape[^1]);
        var flatLogits = logits.reshape(-1, logits.shape[^1]);
        var flatHidden = hidden.reshape(-1, 1, hidden.shape[^1]);                       // [N, 1, H] fp32
        var likeliest = flatLogits.topk(refined, dim: -1, largest: true, sorted: false).indexes;   // [N, K]
        var rows = headWeight.index_select(0, likeliest.reshape(-1)).view(likeliest.shape[0], refined, -1).to_type(ScalarType.Float32);
        var exact = flatHidden.bmm(rows.transpose(1, 2)).squeeze(1);                   // [N, K]
        return flatLogits.scatter(1, likeliest, exact).view(logits.shape);
    }
}

/// <summary>The <c>model.*</c> part: embeddings, decoder layers, final norm.</summary>
internal sealed class Qwen2Body : nn.Module
{
    private readonly Embedding embed_tokens;
    private readonly ModuleList<Qwen2DecoderLayer> layers;
    private readonly RmsNorm norm;

    public Qwen2Body(Qwen2Config c, ScalarType dtype, Device device, bool initialize) : base("model")
    {
        embed_tokens = nn.Embedding(c.VocabSize, c.HiddenSize, device: device, dtype: dtype);
        layers = new ModuleList<Qwen2DecoderLayer>();
        for (int i = 0; i < c.NumHiddenLayers; i++) layers.Add(new Qwen2DecoderLayer(c, i, dtype, device, initialize));
        norm = new RmsNorm(c.HiddenSize, c.RmsNormEps, dtype, device);
        RegisterComponents();
    }

    public Tensor EmbeddingWeight => embed_tokens.weight!;

    /// <summary>Returns (final-norm output, input of the last layer), both fp32.</summary>
    public (Tensor Final, Tensor SprmFeatures) Forward(Tensor inputIds, Tensor cos, Tensor sin, AttentionPlan plan, ScalarType weightDtype)
    {
        var x = embed_tokens.forward(inputIds).to_type(ScalarType.Float32);
        Tensor features = x;
        for (int i = 0; i < layers.Count; i++)
        {
            if (i == layers.Count - 1) features = x;
            // One dispose scope per layer keeps temporaries from piling up (torchsharp-notes §4).
            using var scope = NewDisposeScope();
            x = layers[i].Forward(x, cos, sin, plan, weightDtype).MoveToOuterDisposeScope();
        }
        return (norm.Forward(x), features);
    }
}

/// <summary>Loading Hugging Face checkpoints into <see cref="Qwen2ForCausalLM"/>.</summary>
public static class Qwen2Loading
{
    /// <summary>
    /// Copies checkpoint tensors into the model's parameters (with dtype conversion), after checking that
    /// every expected tensor is present with the right shape and that nothing unexpected is there.
    /// </summary>
    /// <param name="describeSource">Names the file a tensor came from, for error messages.</param>
    public static void LoadWeights(this Qwen2ForCausalLM model, IReadOnlyDictionary<string, Tensor> tensors, Func<string, string> describeSource)
    {
        var parameters = CheckNames(model, tensors.ToDictionary(kv => kv.Key, kv => (IReadOnlyList<long>)kv.Value.shape), describeSource);
        using var _ = no_grad();
        foreach (var (name, p) in parameters)
            p.copy_(tensors[name]);
    }

    /// <summary>
    /// Streams a model directory's safetensors straight into the parameters after the same checks as the dictionary
    /// overload, made on the validated headers before any data is read. Loading through a dictionary of tensors held a
    /// second full copy of the weights until every parameter had been copied.
    /// </summary>
    /// <param name="locations">From <see cref="CheckpointDirectory.ReadTensorLocations"/>.</param>
    public static void LoadWeights(this Qwen2ForCausalLM model, IReadOnlyDictionary<string, CheckpointTensorLocation> locations)
    {
        var parameters = CheckNames(model, locations.ToDictionary(kv => kv.Key, kv => kv.Value.Entry.Shape), name => locations[name].FilePath);
        CheckpointDirectory.ReadInto(locations, parameters.ToDictionary(kv => kv.Key, kv => (Tensor)kv.Value));
    }

    /// <summary>Every parameter present with its shape and nothing unexpected, or one error listing (up to 10) problems.</summary>
    private static Dictionary<string, Parameter> CheckNames(Qwen2ForCausalLM model, IReadOnlyDictionary<string, IReadOnlyList<long>> shapes, Func<string, string> describeSource)
    {
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var problems = new List<string>();
        foreach (var (name, p) in parameters)
        {
            if (!shapes.TryGetValue(name, out var shape))
                problems.Add($"missing tensor '{name}' (expected shape [{string.Join(",", p.shape)}])");
            else if (!shape.SequenceEqual(p.shape))
                problems.Add($"tensor '{name}' in {describeSource(name)} has shape [{string.Join(",", shape)}], expected [{string.Join(",", p.shape)}]");
        }
        foreach (var name in shapes.Keys)
        {
            if (parameters.ContainsKey(name)) continue;
            // Tied checkpoints sometimes carry a copy of the embedding as lm_head; old ones carry rotary buffers.
            if (name == "lm_head.weight" && model.Config.TieWordEmbeddings) continue;
            if (name.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal)) continue;
            problems.Add($"unexpected tensor '{name}' in {describeSource(name)}");
        }
        if (problems.Count > 0)
            throw new InvalidDataException("checkpoint does not match the Qwen2 config: " + string.Join("; ", problems.Take(10)) + (problems.Count > 10 ? $"; and {problems.Count - 10} more" : ""));
        return parameters;
    }
}
