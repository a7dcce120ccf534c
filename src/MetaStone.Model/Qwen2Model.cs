using MetaStone.Model.Checkpoints;
using MetaStone.Model.Kernels;
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
    private readonly Scalar _eps; // rooted for the module's life (TorchScalars)
    private readonly float _epsValue;
    private readonly bool _weightIsFp32;

    public RmsNorm(int size, double eps, ScalarType dtype, Device device) : base(nameof(RmsNorm))
    {
        weight = nn.Parameter(ones(size, dtype: dtype, device: device));
        _eps = eps.ToScalar();
        _epsValue = (float)eps;
        _weightIsFp32 = dtype == ScalarType.Float32;
        RegisterComponents();
    }

    /// <summary>In <see cref="HostRmsNorm"/> for CPU inference without autograd (one tensor instead of six), else in
    /// torch.</summary>
    internal Tensor Forward(Tensor x, LayerContext ctx) =>
        ctx.HostKernelsAllowed && !ctx.RecordsGradients && HostRmsNorm.Supports(x, weight) ? HostRmsNorm.Forward(x, weight, _epsValue) : Forward(x);

    /// <summary>x in fp32 (the residual stream) → fp32.</summary>
    /// <remarks>Six torch calls (a decode step is dominated by per-call overhead): the same operations in the same order as
    /// <c>x * rsqrt(mean(x·x) + eps) * w</c>, the intermediate ones in place.</remarks>
    public Tensor Forward(Tensor x)
    {
        var meanSquare = x.mul(x).mean([-1], keepdim: true);
        meanSquare.add_(_eps, TorchScalars.One).rsqrt_();
        return x.mul(meanSquare).mul_(_weightIsFp32 ? weight : weight.to_type(ScalarType.Float32));
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _eps.Dispose();
        base.Dispose(disposing);
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

/// <summary>
/// Several Linears over the same input whose weights (and biases) are row blocks of one tensor: each Linear's parameters
/// are views of it, so checkpoints load into them by their Hugging Face names (straight into the fused storage: no
/// second copy, no concatenation), and inference runs them as one matmul whose output is split by views.
/// </summary>
/// <remarks>
/// With autograd recording (training), gradients have to reach the part parameters, so <see cref="Weight"/> and
/// <see cref="Bias"/> concatenate them instead (the same values, one copy per forward).
/// </remarks>
internal sealed class FusedLinears : IDisposable
{
    private readonly Tensor _weight;
    private readonly Tensor? _bias;

    public Linear[] Parts { get; }

    public FusedLinears(int inFeatures, int[] outFeatures, bool hasBias, ScalarType dtype, Device device, bool initialize)
    {
        long rows = outFeatures.Sum();
        // Long-lived: owned by the module, outside any dispose scope the constructor runs in.
        _weight = empty(rows, inFeatures, dtype: dtype, device: device).DetachFromDisposeScope();
        _bias = hasBias ? empty(rows, dtype: dtype, device: device).DetachFromDisposeScope() : null;
        Parts = new Linear[outFeatures.Length];
        long offset = 0;
        for (int i = 0; i < outFeatures.Length; i++)
        {
            Parts[i] = nn.Linear(
                new Parameter(_weight.narrow(0, offset, outFeatures[i])),
                _bias is null ? null : new Parameter(_bias.narrow(0, offset, outFeatures[i])));
            if (initialize)
            {
                // TorchSharp's default init, drawn in the same order as separate nn.Linears drew it.
                using var fresh = nn.Linear(inFeatures, outFeatures[i], hasBias: hasBias, device: device, dtype: dtype);
                using var noGrad = no_grad();
                Parts[i].weight!.copy_(fresh.weight!);
                if (hasBias) Parts[i].bias!.copy_(fresh.bias!);
            }
            offset += outFeatures[i];
        }
    }

    /// <summary>[sum of outputs, in]: the fused storage, or with autograd on the concatenated parts.</summary>
    public Tensor Weight(bool recordsGradients) => recordsGradients ? cat(Parts.Select(p => (Tensor)p.weight!).ToList(), 0) : _weight;

    public Tensor? Bias(bool recordsGradients) => _bias is null ? null
        : recordsGradients ? cat(Parts.Select(p => (Tensor)p.bias!).ToList(), 0) : _bias;

    public void Dispose()
    {
        _weight.Dispose();
        _bias?.Dispose();
    }
}

/// <summary>What a forward pass's layers share: batch and length, the weights' dtype, whether autograd records.</summary>
/// <param name="HostKernelsAllowed">The model allows <see cref="HostLinear"/> (<see cref="Qwen2ForCausalLM.UseHostKernels"/>) and
/// runs on the CPU.</param>
/// <param name="Decoding">One new token per row (the decode plan): the batch decides where the matmuls run.</param>
internal readonly record struct LayerContext(long Batch, long Length, ScalarType WeightDtype, bool RecordsGradients, bool HostKernelsAllowed, ScalarType KvDtype, bool Decoding)
{
    /// <summary>bf16/fp16 weights: activations are cast around the matmuls (fp32 in between).</summary>
    public bool Mixed => WeightDtype != ScalarType.Float32;

    /// <summary>Keys and values are stored rounded to a narrower dtype than the fp32 attention math.</summary>
    public bool NarrowKv => KvDtype != ScalarType.Float32;

    /// <summary>The matmuls of this pass run in <see cref="HostLinear"/>: CPU inference, and for a decode step a batch the
    /// kernel is faster at (<see cref="HostLinear.DecodeMaxRows"/>).</summary>
    public bool HostKernels => HostKernelsAllowed && !RecordsGradients && HostLinear.IsSupported
        && (!Decoding || Batch * Length <= HostLinear.DecodeMaxRows(WeightDtype));

    /// <summary>The bf16 matmuls of this decode step run in <see cref="NativeBf16"/> (bf16-rounded activations): a batch
    /// above what <see cref="HostLinear"/>'s exact kernel is faster at.</summary>
    public bool NativeBf16Decode => HostKernels && Decoding && WeightDtype == ScalarType.BFloat16
        && Batch * Length > HostLinear.Bf16DecodeMaxRows && NativeBf16.IsAvailable;

    /// <summary>The matmuls of this pass run in <see cref="NativeBf16.ForwardExact"/> (exact weights times unrounded
    /// activations, fp32 sums, as in <see cref="HostLinear"/> but faster from
    /// <see cref="NativeBf16.ActivationPackedMinRows"/> rows): fp32 weights, and bf16 prefill and full forwards (bf16
    /// decode batches take the faster rounded kernels, <see cref="NativeBf16Decode"/>).</summary>
    public bool NativeExact => HostKernels && (WeightDtype == ScalarType.Float32 || (WeightDtype == ScalarType.BFloat16 && !Decoding))
        && Batch * Length >= NativeBf16.ActivationPackedMinRows && NativeBf16.IsAvailable;
}

/// <summary>Every matmul of the decoder: fp32 activations in, fp32 out, whatever the weights' dtype.</summary>
internal static class Qwen2Projection
{
    /// <summary><c>x·Wᵀ + b</c>: in <see cref="HostLinear"/> when the pass takes it (exact bf16 weights times unrounded
    /// activations), else in torch, where bf16/fp16 weights need the activations rounded to their dtype and return
    /// a rounded result.</summary>
    /// <param name="widenInto">Optional fp32 memory of the output's shape where a mixed-precision torch matmul widens
    /// its result (returned as that tensor) instead of into a fresh tensor; ignored by the other paths.</param>
    public static Tensor Apply(Tensor x, Tensor weight, Tensor? bias, LayerContext ctx, Tensor? widenInto = null)
    {
        if (InHostKernel(weight, ctx))
        {
            if (ctx.NativeBf16Decode && weight.dtype == ScalarType.BFloat16) return NativeBf16.Forward(x, weight, bias, widenInto);
            return ctx.NativeExact ? NativeBf16.ForwardExact(x, weight, bias, widenInto) : HostLinear.Forward(x, weight, bias);
        }
        if (!ctx.Mixed) return F.linear(x, weight, bias);
        var narrow = F.linear(x.to_type(ctx.WeightDtype), weight, bias);
        return widenInto is not null && widenInto.dtype == ScalarType.Float32 && widenInto.shape.SequenceEqual(narrow.shape)
            ? widenInto.copy_(narrow)
            : narrow.to_type(ScalarType.Float32);
    }

    /// <summary>Whether <see cref="Apply"/> computes this matmul in the host kernel (exact, unrounded fp32 output).</summary>
    public static bool InHostKernel(Tensor weight, LayerContext ctx) => ctx.HostKernels && HostLinear.Takes(weight);
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
    /// view (slice) instead of an index_select copy of every row; <paramref name="Slots"/> is null then.</param>
    /// <param name="HostSlots">Row i's slot, for <see cref="HostDecodeAttention"/>.</param>
    /// <param name="HostPositions">Row i's position.</param>
    public sealed record Decode(KvCache Cache, Tensor? Slots, Tensor FlatIndex, Tensor Mask, int KvLength, int? FirstSlot,
        long[] HostSlots, long[] HostPositions) : AttentionPlan;
}

public sealed class Qwen2Attention : nn.Module
{
    private readonly Linear q_proj, k_proj, v_proj, o_proj;
    private readonly FusedLinears _qkv;
    private readonly int _heads, _kvHeads, _headDim, _layer;

    public Qwen2Attention(Qwen2Config c, int layer, ScalarType dtype, Device device) : this(c, layer, dtype, device, initialize: true) { }

    /// <param name="initialize">False leaves the weights uninitialised, for a model whose every parameter is loaded next.</param>
    public Qwen2Attention(Qwen2Config c, int layer, ScalarType dtype, Device device, bool initialize) : base(nameof(Qwen2Attention))
    {
        _heads = c.NumAttentionHeads;
        _kvHeads = c.NumKeyValueHeads;
        _headDim = c.HeadDim;
        _layer = layer;
        // q, k and v as one [(heads + 2·kvHeads)·headDim, hidden] matmul; the parameters keep their names as views.
        _qkv = new FusedLinears(c.HiddenSize, [_heads * _headDim, _kvHeads * _headDim, _kvHeads * _headDim], hasBias: true, dtype, device, initialize);
        q_proj = _qkv.Parts[0];
        k_proj = _qkv.Parts[1];
        v_proj = _qkv.Parts[2];
        o_proj = Qwen2Layers.Linear(_heads * _headDim, c.HiddenSize, hasBias: false, dtype, device, initialize);
        RegisterComponents();
    }

    /// <param name="x">Normalised input, fp32 [B, T, H].</param>
    /// <param name="cos">fp32 rotary table rows [B, T, 1, hd] (and <paramref name="sinSigned"/>, see <see cref="Rotary"/>).</param>
    /// <returns>The attention block's output in fp32 [B, T, H], a fresh tensor (the caller adds the residual in place).</returns>
    /// <remarks>Mixed precision: the projections run in the weights' dtype; RoPE, the attention scores, softmax and the
    /// weighted sum run in fp32. Keys and values are rounded to the KV cache's dtype (the weights' dtype) in every plan,
    /// so a full forward sees exactly the keys and values a cached decode reads back (<see cref="Qwen2ForCausalLM.KvDtype"/>).</remarks>
    internal Tensor Forward(Tensor x, Tensor cos, Tensor sinSigned, AttentionPlan plan, LayerContext ctx)
    {
        long b = ctx.Batch, t = ctx.Length;
        var storage = ctx.KvDtype;
        long qkWidth = (_heads + _kvHeads) * _headDim;
        // One matmul for q, k and v: [B, T, (heads + 2·kv)·hd], fp32.
        var qkv = Qwen2Projection.Apply(x, _qkv.Weight(ctx.RecordsGradients), _qkv.Bias(ctx.RecordsGradients), ctx);
        // RoPE on q and k together: [B, T, heads + kv, hd].
        var qk = Rotary.Apply(qkv.narrow(-1, 0, qkWidth).view(b, t, _heads + _kvHeads, _headDim), cos, sinSigned);
        var q = qk.narrow(2, 0, _heads);                                               // [B, T, heads, hd] fp32
        var k = ctx.NarrowKv ? qk.narrow(2, _heads, _kvHeads).to_type(storage) : qk.narrow(2, _heads, _kvHeads); // [B, T, kv, hd], cache dtype
        var v = qkv.narrow(-1, qkWidth, _kvHeads * _headDim).view(b, t, _kvHeads, _headDim);
        if (ctx.NarrowKv) v = v.to_type(storage);                                         // [B, T, kv, hd], cache dtype
        int groups = _heads / _kvHeads;
        Tensor attn; // [B, T, heads·hd] fp32
        switch (plan)
        {
            case AttentionPlan.Full full:
            {
                var kk = ToFp32(k, ctx).transpose(1, 2).repeat_interleave(groups, dim: 1);
                var vv = ToFp32(v, ctx).transpose(1, 2).repeat_interleave(groups, dim: 1);
                var qh = q.transpose(1, 2);
                Tensor heads;
                if (full.PaddingMask is null)
                {
                    heads = F.scaled_dot_product_attention(qh, kk, vv, is_casual: true);
                }
                else
                {
                    // Causal AND key is not padding; [B, 1, T, T].
                    var causal = ones(t, t, dtype: ScalarType.Bool, device: x.device).tril();
                    var mask = causal.unsqueeze(0) & full.PaddingMask.unsqueeze(1);
                    heads = F.scaled_dot_product_attention(qh, kk, vv, mask.unsqueeze(1));
                }
                attn = heads.transpose(1, 2).reshape(b, t, _heads * _headDim);
                break;
            }
            case AttentionPlan.Prefill pre:
            {
                var kc = pre.Cache.Keys(_layer)[pre.Slot];
                var vc = pre.Cache.Values(_layer)[pre.Slot];
                kc.narrow(0, pre.Start, t).copy_(k[0]);
                vc.narrow(0, pre.Start, t).copy_(v[0]);
                long kvLen = pre.Start + t;
                var kk = ToFp32(kc.narrow(0, 0, kvLen), ctx).transpose(0, 1).unsqueeze(0).repeat_interleave(groups, dim: 1);
                var vv = ToFp32(vc.narrow(0, 0, kvLen), ctx).transpose(0, 1).unsqueeze(0).repeat_interleave(groups, dim: 1);
                var qh = q.transpose(1, 2);
                Tensor heads;
                if (pre.Start == 0)
                {
                    heads = F.scaled_dot_product_attention(qh, kk, vv, is_casual: true);
                }
                else
                {
                    // SDPA's causal flag is top-left aligned; continuing a sequence needs an explicit mask.
                    var rows = TorchScalars.Arange(pre.Start, kvLen, x.device).unsqueeze(1);
                    var cols = TorchScalars.Arange(0, kvLen, x.device).unsqueeze(0);
                    heads = F.scaled_dot_product_attention(qh, kk, vv, (cols <= rows).unsqueeze(0).unsqueeze(0));
                }
                attn = heads.transpose(1, 2).reshape(b, t, _heads * _headDim);
                break;
            }
            case AttentionPlan.Decode dec:
            {
                // Write this step's rows: one index_copy_ each into the cache's flat [slots·maxLen, 1, kv, hd] view.
                dec.Cache.FlatKeys(_layer).index_copy_(0, dec.FlatIndex, k);
                dec.Cache.FlatValues(_layer).index_copy_(0, dec.FlatIndex, v);
                if (ctx.HostKernelsAllowed && !ctx.RecordsGradients && HostDecodeAttention.Supports(q, dec.Cache.Keys(_layer), _headDim))
                {
                    attn = HostDecodeAttention.Run(q, dec.Cache.Keys(_layer), dec.Cache.Values(_layer), dec.HostSlots, dec.HostPositions, _heads, _kvHeads, _headDim);
                    break;
                }
                var kk = ToFp32(ReadRows(dec.Cache.Keys(_layer), dec, b), ctx).permute(0, 2, 1, 3); // [B, kv, L, hd]
                var vv = ToFp32(ReadRows(dec.Cache.Values(_layer), dec, b), ctx).permute(0, 2, 1, 3);
                // GQA without copying the cache: fold the query heads of one KV group into the query-length axis.
                var qg = q.view(b, _kvHeads, groups, _headDim);
                attn = F.scaled_dot_product_attention(qg, kk, vv, dec.Mask).reshape(b, 1, _heads * _headDim);
                break;
            }
            default:
                throw new InvalidOperationException("unknown attention plan");
        }
        return Qwen2Projection.Apply(attn, o_proj.weight!, null, ctx);
    }

    internal Tensor QkvWeight => _qkv.Weight(recordsGradients: false);
    internal Tensor? QkvBias => _qkv.Bias(recordsGradients: false);
    internal Tensor OutWeight => o_proj.weight!;
    internal int Heads => _heads;
    internal int KvHeads => _kvHeads;
    internal int HeadDim => _headDim;

    /// <summary>Rows [0, KvLength) of the decoding slots: a slice when they are one run, else a gather.</summary>
    internal static Tensor ReadRows(Tensor cache, AttentionPlan.Decode dec, long b) => dec.FirstSlot is int first
        ? cache[TensorIndex.Slice(first, first + b), TensorIndex.Slice(0, dec.KvLength)]
        : cache.narrow(1, 0, dec.KvLength).index_select(0, dec.Slots!);

    private static Tensor ToFp32(Tensor x, LayerContext ctx) => ctx.NarrowKv ? x.to_type(ScalarType.Float32) : x;

    protected override void Dispose(bool disposing)
    {
        if (disposing) _qkv.Dispose();
        base.Dispose(disposing);
    }
}

public sealed class Qwen2Mlp : nn.Module
{
    private readonly Linear gate_proj, up_proj, down_proj;
    private readonly FusedLinears _gateUp;
    private readonly int _intermediate;

    public Qwen2Mlp(Qwen2Config c, ScalarType dtype, Device device) : this(c, dtype, device, initialize: true) { }

    /// <param name="initialize">False leaves the weights uninitialised, for a model whose every parameter is loaded next.</param>
    public Qwen2Mlp(Qwen2Config c, ScalarType dtype, Device device, bool initialize) : base(nameof(Qwen2Mlp))
    {
        _intermediate = c.IntermediateSize;
        // gate and up as one [2·ffn, hidden] matmul; the parameters keep their names as views.
        _gateUp = new FusedLinears(c.HiddenSize, [c.IntermediateSize, c.IntermediateSize], hasBias: false, dtype, device, initialize);
        gate_proj = _gateUp.Parts[0];
        up_proj = _gateUp.Parts[1];
        down_proj = Qwen2Layers.Linear(c.IntermediateSize, c.HiddenSize, hasBias: false, dtype, device, initialize);
        RegisterComponents();
    }

    internal Tensor GateUpWeight => _gateUp.Weight(recordsGradients: false);
    internal Tensor DownWeight => down_proj.weight!;

    /// <summary>x fp32 → fp32 (a fresh tensor); the gate (SiLU × up) is computed in fp32.</summary>
    internal Tensor Forward(Tensor x, LayerContext ctx)
    {
        var gateUp = Qwen2Projection.Apply(x, _gateUp.Weight(ctx.RecordsGradients), null, ctx);
        return Qwen2Projection.Apply(Gate(gateUp, _intermediate, ctx), down_proj.weight!, null, ctx);
    }

    /// <summary>silu(gate) · up from the fused projection's output [..., 2·ffn] → fresh [..., ffn] fp32: on the host when
    /// the matmuls run there (see <see cref="HostSwiGlu"/>), else in torch.</summary>
    internal static Tensor Gate(Tensor gateUp, int ffn, LayerContext ctx) => ctx.HostKernels && HostSwiGlu.Supports(gateUp, ffn)
        ? HostSwiGlu.Forward(gateUp, ffn)
        : F.silu(gateUp.narrow(-1, 0, ffn)).mul_(gateUp.narrow(-1, ffn, ffn));

    protected override void Dispose(bool disposing)
    {
        if (disposing) _gateUp.Dispose();
        base.Dispose(disposing);
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

    internal Qwen2Attention Attention => self_attn;
    internal Qwen2Mlp Mlp => mlp;
    internal RmsNorm InputNorm => input_layernorm;
    internal RmsNorm PostAttentionNorm => post_attention_layernorm;

    /// <param name="x">The residual stream, fp32 whatever the weights' dtype (as llama.cpp keeps it: a bf16 residual
    /// loses the small updates of every layer). Not modified: it may be the SPRM feature.</param>
    internal Tensor Forward(Tensor x, Tensor cos, Tensor sinSigned, AttentionPlan plan, LayerContext ctx)
    {
        // The residual adds go into the blocks' fresh outputs (a + x == x + a exactly), never into x.
        var h = self_attn.Forward(input_layernorm.Forward(x, ctx), cos, sinSigned, plan, ctx).add_(x, TorchScalars.One);
        return mlp.Forward(post_attention_layernorm.Forward(h, ctx), ctx).add_(h, TorchScalars.One);
    }
}

/// <summary>Rotary position embedding (rotate-half form, as Hugging Face Qwen2).</summary>
internal static class Rotary
{
    /// <summary>cos and signed sin tables [maxPositions, headDim] in fp32. The signed sin is −sin on the first half and
    /// sin on the second, so that rotate_half(x)·sin = roll(x, hd/2)·signedSin exactly (a negation is exact).</summary>
    public static (Tensor Cos, Tensor SinSigned) Tables(int headDim, double theta, int maxPositions, Device device)
    {
        using var scope = NewDisposeScope();
        // inv_freq = theta^(-2i/d) in float64 on the host: no implicit Scalars (see TorchScalars).
        var invFreq = tensor(Enumerable.Range(0, (headDim + 1) / 2).Select(i => Math.Pow(theta, -(2.0 * i) / headDim)).ToArray(), dtype: ScalarType.Float64);
        var freqs = outer(TorchScalars.Arange(0, maxPositions, CPU, ScalarType.Float64), invFreq);
        var emb = cat([freqs, freqs], dim: -1);
        var cos = emb.cos().to_type(ScalarType.Float32).to(device);
        var sin = cat([freqs.sin().neg(), freqs.sin()], dim: -1).to_type(ScalarType.Float32).to(device);
        return (cos.MoveToOuterDisposeScope(), sin.MoveToOuterDisposeScope());
    }

    /// <summary>x [..., hd] fp32; cos/signed sin broadcastable to x. x·cos + rotate_half(x)·sin in four torch calls.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sinSigned)
    {
        var rotated = x.roll(x.shape[^1] / 2, -1).mul_(sinSigned); // [x2, x1]·[−sin, sin] = [−x2·sin, x1·sin]
        return x.mul(cos).add_(rotated, TorchScalars.One);          // explicit alpha: see TorchScalars
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
    private readonly Tensor _ropeCos, _ropeSinSigned;

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
        (_ropeCos, _ropeSinSigned) = Rotary.Tables(config.HeadDim, config.RopeTheta, ropePositions ?? config.MaxPositionEmbeddings, device);
        _ropeCos = _ropeCos.DetachFromDisposeScope();
        _ropeSinSigned = _ropeSinSigned.DetachFromDisposeScope();
    }

    internal Qwen2Body Body => model;
    internal Tensor HeadWeight => lm_head is not null ? lm_head.weight! : model.EmbeddingWeight;
    internal Tensor RopeCos => _ropeCos;
    internal Tensor RopeSinSigned => _ropeSinSigned;

    /// <summary>
    /// Whether inference passes of few rows (decoding) run their matmuls in the hand-written CPU kernel
    /// (<see cref="HostLinear"/>: exact bf16 weights times fp32 activations) instead of torch. On by default; off gives
    /// torch's kernels everywhere (and torch's bf16 rounding of matmul inputs and outputs). No effect off the CPU or
    /// without AVX-512, where torch runs every matmul.
    /// </summary>
    public bool UseHostKernels { get; set; } = true;

    internal bool HostKernelsAllowed => UseHostKernels && Device.type == DeviceType.CPU;

    /// <summary>
    /// The dtype keys and values are kept in (a <see cref="KvCache"/> for this model must have it; a full forward rounds
    /// them to it too, so it computes what a cached decode computes). Default: fp32 on the CPU whatever the weights:
    /// attention runs in fp32 there, so a bf16 cache was widened again at every step for every cached position, and
    /// rounding keys and values to bf16 was the largest error left in the bf16 path once the matmuls were exact
    /// (measured on the fixtures: worst top-5 |Δp| 1.2e-3 / 6.0e-3 with a bf16 cache). Elsewhere (GPU memory is the
    /// limit) the weights' dtype. Settable before any cache is made (<see cref="ModelLoadOptions.KvCacheDtype"/>): an fp32
    /// cache is twice a bf16 one (0.5B shape: 24 KB per token, 1.6 GB for 32 slots of 2,048).
    /// </summary>
    public ScalarType KvDtype
    {
        get => _kvDtype ?? (Device.type == DeviceType.CPU ? ScalarType.Float32 : Dtype);
        set => _kvDtype = value is ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16 ? value
            : throw new ArgumentException($"a KV cache holds fp32, bf16 or fp16, not {value}", nameof(value));
    }

    private ScalarType? _kvDtype;

    /// <summary>Whether a decode step of <paramref name="batch"/> rows runs its matmuls in <see cref="HostLinear"/>.</summary>
    public bool DecodesInHostKernels(int batch) =>
        new LayerContext(batch, 1, Dtype, RecordsGradients: false, HostKernelsAllowed, KvDtype, Decoding: true).HostKernels;

    /// <summary>
    /// For a whole engine step (sampling, step scoring and the decode forward): torch on one thread when the step's
    /// matmuls run in the kernel team (see <see cref="HostKernelPass"/>). Sampling over the vocabulary on two torch
    /// threads left libgomp's worker spinning into the next forward, against the kernel team: measured with `generate`,
    /// one sequence, fp32, 0.5B shape: 10.0–11.2 tok/s with torch on two threads outside the forward, 13.3–13.4 on one.
    /// </summary>
    internal HostKernelPass.Scope HostKernelStep(int batch) => DecodesInHostKernels(batch) ? HostKernelPass.Begin() : default;

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

    /// <summary>
    /// One prefill of two tokens and one decode step in a throw-away cache: the JIT compiles the forward pass, its
    /// kernels and TorchSharp's interop stubs before the first request instead of during it (measured on the 0.5B shape:
    /// a 2-token `generate` took 1.09 s in a fresh process against ~0.3 s for the same request once warm).
    /// </summary>
    public void WarmUp()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var cache = new KvCache(Config, slots: 1, maxLength: 3, Device, KvDtype);
        Prefill(tensor(new long[] { 0, 1 }, device: Device).unsqueeze(0), cache, slot: 0, start: 0);
        Decode(tensor(new long[] { 2 }, device: Device), cache, [0L], [2L]);
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
        CheckCache(cache);
        long t = inputIds.shape[1];
        if (start + t > cache.MaxLength)
            throw new ArgumentException($"sequence of {start + t} tokens exceeds the cache length {cache.MaxLength}");
        CheckLength(start + t);
        var positions = TorchScalars.Arange(start, start + t, Device).unsqueeze(0);
        return Run(inputIds, positions, new AttentionPlan.Prefill(cache, slot, start), allPositions);
    }

    /// <summary>One decode step: token <paramref name="inputIds"/>[i] at position <paramref name="positions"/>[i] of slot <paramref name="slots"/>[i].</summary>
    /// <param name="logitsBuffer">Optional fp32 [≥ B, V] memory the step's logits may be written into (and returned as a
    /// view of) instead of a fresh tensor, when the head runs in torch on bf16/fp16 weights. The caller owns it and must be
    /// done with the previous step's logits before the next call: the engine reuses one per runner, which saves a fresh
    /// 19 MB tensor per best-of-32 step on Qwen's vocabulary (its pages faulted in every step).</param>
    public ForwardOutput Decode(Tensor inputIds, KvCache cache, ReadOnlySpan<long> slots, ReadOnlySpan<long> positions, Tensor? logitsBuffer = null)
    {
        CheckCache(cache);
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
        var slotT = contiguous ? null : tensor(slots.ToArray(), device: Device);
        var flatT = tensor(flat, device: Device);
        // [B, 1, 1, L]: key j visible to row i iff j <= position_i (rows have different lengths).
        var mask = (TorchScalars.Arange(0, kvLength, Device).unsqueeze(0) <= posT.unsqueeze(1)).unsqueeze(1).unsqueeze(1);
        return Run(inputIds.view(b, 1), posT.view(b, 1), new AttentionPlan.Decode(cache, slotT, flatT, mask, kvLength, contiguous ? (int)slots[0] : null, slots.ToArray(), positions.ToArray()), allPositions: false,
            logitsBuffer?.narrow(0, 0, b));
    }

    private void CheckCache(KvCache cache)
    {
        if (cache.Dtype != KvDtype)
            throw new ArgumentException($"the KV cache holds {TorchSettings.DtypeName(cache.Dtype)} but this model keeps keys and values in {TorchSettings.DtypeName(KvDtype)} (create it with the model's KvDtype)", nameof(cache));
    }

    private void CheckLength(long length)
    {
        if (length > MaxPositions)
            throw new ArgumentException($"sequence of {length} tokens is longer than the model's context window of {MaxPositions} tokens");
    }

    private ForwardOutput Run(Tensor inputIds, Tensor positions, AttentionPlan plan, bool allPositions, Tensor? logitsBuffer = null)
    {
        long b = inputIds.shape[0], t = inputIds.shape[1];
        // Fused projections read their fused storage unless autograd needs gradients for the part parameters.
        var ctx = new LayerContext(b, t, Dtype, RecordsGradients: is_grad_enabled(), HostKernelsAllowed, KvDtype, Decoding: plan is AttentionPlan.Decode);
        // cos/sin gathered per row and position so rows at different positions share one batch; RoPE stays in fp32.
        var flatPositions = positions.reshape(-1);
        var cos = _ropeCos.index_select(0, flatPositions).view(b, t, 1, -1);
        var sin = _ropeSinSigned.index_select(0, flatPositions).view(b, t, 1, -1);
        // Torch on one thread while the kernel team runs the matmuls (HostKernelPass); `default` is no scope.
        using var hostPass = ctx.HostKernels ? HostKernelPass.Begin() : default;
        var (final, features) = model.Forward(inputIds, cos, sin, plan, ctx);
        if (!allPositions)
        {
            final = final.select(1, t - 1);
            features = features.select(1, t - 1);
        }
        var headWeight = lm_head is not null ? lm_head.weight! : model.EmbeddingWeight;
        return new ForwardOutput(HeadLogits(final, headWeight, ctx with { Length = allPositions ? t : 1 }, logitsBuffer), features);
    }

    /// <summary>fp32 logits of fp32 final hidden states: exact in the host kernel, else a torch matmul (refined when it
    /// rounds, see <see cref="RefineLikeliest"/>).</summary>
    /// <param name="logitsBuffer">Where a torch head widens its bf16/fp16 logits to fp32 when given, with the shape of the
    /// logits (see <see cref="Decode"/>); otherwise a fresh tensor.</param>
    internal static Tensor HeadLogits(Tensor final, Tensor headWeight, LayerContext ctx, Tensor? logitsBuffer = null)
    {
        var logits = Qwen2Projection.Apply(final, headWeight, null, ctx, logitsBuffer);
        // Only torch's bf16 matmul rounds the logits themselves. The native kernel rounds just its inputs, and recomputing
        // its likeliest logits from the unrounded hidden state measured no better (top-5 |Δp| 2.9e-3 / 7.3e-3 with,
        // 2.6e-3 / 7.1e-3 without, on the fixtures) at ~40 ms per best-of-32 step on the 0.5B shape (its topk over
        // [32, 151,936] runs on torch's one thread inside the step's host-kernel pass): 259 → 268–276 tok/s without.
        bool rounded = ctx.Mixed && !Qwen2Projection.InHostKernel(headWeight, ctx);
        return rounded ? RefineLikeliest(logits, final, headWeight) : logits;
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
    /// <param name="logits">The head matmul's own fresh fp32 output, refined in place and returned: a scattered copy was
    /// one more [B, V] tensor per step (19 MB at B = 32 on Qwen's vocabulary, written to fresh pages).</param>
    internal static Tensor RefineLikeliest(Tensor logits, Tensor hidden, Tensor headWeight)
    {
        int refined = (int)Math.Min(RefinedLogits, logits.shape[^1]);
        var flatLogits = logits.view(-1, logits.shape[^1]);                               // a view: refined in place
        var flatHidden = hidden.reshape(-1, 1, hidden.shape[^1]);                       // [N, 1, H] fp32
        var likeliest = flatLogits.topk(refined, dim: -1, largest: true, sorted: false).indexes;   // [N, K]
        var rows = headWeight.index_select(0, likeliest.reshape(-1)).view(likeliest.shape[0], refined, -1).to_type(ScalarType.Float32);
        var exact = flatHidden.bmm(rows.transpose(1, 2)).squeeze(1);                   // [N, K]
        flatLogits.scatter_(1, likeliest, exact);
        return logits;
    }
}

/// <summary>The <c>model.*</c> part: embeddings, decoder layers, final norm.</summary>
internal sealed class Qwen2Body : nn.Module
{
    private readonly nn.Module<Tensor, Tensor> embed_tokens;
    private readonly ModuleList<Qwen2DecoderLayer> layers;
    private readonly RmsNorm norm;

    public Qwen2Body(Qwen2Config c, ScalarType dtype, Device device, bool initialize) : base("model")
    {
        // Uninitialised when every parameter is loaded next: nn.Embedding draws N(0, 1) for all vocabulary × hidden
        // values (136 M on the 0.5B shape) only for the loader to overwrite them, and Embedding_from_pretrained builds
        // one and copies: 2.0 s of the model's 2.1 s construction, measured.
        embed_tokens = initialize
            ? nn.Embedding(c.VocabSize, c.HiddenSize, device: device, dtype: dtype)
            : new UninitializedEmbedding(c.VocabSize, c.HiddenSize, dtype, device);
        layers = new ModuleList<Qwen2DecoderLayer>();
        for (int i = 0; i < c.NumHiddenLayers; i++) layers.Add(new Qwen2DecoderLayer(c, i, dtype, device, initialize));
        norm = new RmsNorm(c.HiddenSize, c.RmsNormEps, dtype, device);
        RegisterComponents();
    }

    public Tensor EmbeddingWeight => embed_tokens switch
    {
        Embedding e => e.weight!,
        UninitializedEmbedding u => u.Weight,
        _ => throw new InvalidOperationException("unknown embedding module"),
    };
    internal IList<Qwen2DecoderLayer> Layers => layers;
    internal RmsNorm FinalNorm => norm;

    /// <summary>Returns (final-norm output, input of the last layer), both fp32.</summary>
    public (Tensor Final, Tensor SprmFeatures) Forward(Tensor inputIds, Tensor cos, Tensor sin, AttentionPlan plan, LayerContext ctx)
    {
        var x = embed_tokens.forward(inputIds);
        if (ctx.Mixed) x = x.to_type(ScalarType.Float32);
        Tensor features = x;
        for (int i = 0; i < layers.Count; i++)
        {
            if (i == layers.Count - 1) features = x;
            // One dispose scope per layer keeps temporaries from piling up (torchsharp-notes §4).
            using var scope = NewDisposeScope();
            x = layers[i].Forward(x, cos, sin, plan, ctx).MoveToOuterDisposeScope();
        }
        return (norm.Forward(x, ctx), features);
    }
}

/// <summary>An embedding table over uninitialised memory, for a model whose weights are loaded next; the same parameter
/// name (<c>weight</c>) and lookup as <c>nn.Embedding</c>.</summary>
internal sealed class UninitializedEmbedding : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;

    public UninitializedEmbedding(long count, long dimension, ScalarType dtype, Device device) : base("Embedding")
    {
        weight = new Parameter(empty(count, dimension, dtype: dtype, device: device));
        RegisterComponents();
    }

    public Tensor Weight => weight;

    public override Tensor forward(Tensor ids)
    {
        var rows = weight.index_select(0, ids.reshape(-1));
        return rows.view([.. ids.shape, weight.shape[1]]);
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
