using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using MetaStone.Model.Generation;
using MetaStone.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace MetaStone.Model.Diagnostics;

/// <summary>Milliseconds of one decode step, whole and by op class (medians of the same number of repetitions).</summary>
/// <param name="TensorsPerStep">Tensor handles one <see cref="Qwen2ForCausalLM.Decode"/> creates: each is a torch call
/// (P/Invoke, libtorch dispatch, a managed handle) and a disposal.</param>
public sealed record DecodeProfile(int Batch, int Position, string Dtype, double DecodeForwardMs, double MatmulsMs, double LmHeadMs,
    double CacheWritesMs, double AttentionMs, double NormsMs, double ElementwiseMs, double IndexTensorsMs, double ReadBackMs, double SamplingMs,
    long TensorsPerStep)
{
    /// <summary>The forward's time no op class accounts for: per-call overhead between the kernels.</summary>
    public double UnaccountedMs => DecodeForwardMs - MatmulsMs - LmHeadMs - CacheWritesMs - AttentionMs - NormsMs - ElementwiseMs - IndexTensorsMs;

    public string ToJson() => JsonSerializer.Serialize(new
    {
        what = "profile", batch = Batch, position = Position, dtype = Dtype,
        decodeForwardMs = Round(DecodeForwardMs), matmulsMs = Round(MatmulsMs), lmHeadMs = Round(LmHeadMs), cacheWritesMs = Round(CacheWritesMs), attentionMs = Round(AttentionMs),
        normsMs = Round(NormsMs), elementwiseMs = Round(ElementwiseMs), indexTensorsMs = Round(IndexTensorsMs), readBackMs = Round(ReadBackMs),
        samplingMs = Round(SamplingMs), unaccountedMs = Round(UnaccountedMs), tensorsPerStep = TensorsPerStep,
    });

    private static double Round(double ms) => Math.Round(ms, 3);
}

/// <summary>
/// Profiles one decode step of a loaded model at batch B (issue 13): the whole <see cref="Qwen2ForCausalLM.Decode"/>, then each
/// op class replayed alone at the step's shapes with the model's own weights and modules — the fused projections, o_proj and
/// down_proj of every layer; the LM head (with the bf16 refinement); the cache writes of the step's keys and values;
/// the decode attention (the host kernel, or reads, casts and SDPA); the RMSNorms; the element-wise rest (casts, splits, RoPE, SwiGLU gate, residual adds); the step's index tensors; one
/// host read-back; and <see cref="TokenSampler"/> at temperature 0.8, top-p 0.95. What no class accounts for is the per-call
/// overhead between kernels. libtorch has no profiler in TorchSharp, hence the replay.
/// </summary>
public static class DecodeProfiler
{
    private const int WarmupForwards = 40;
    private static readonly TimeSpan WarmupTime = TimeSpan.FromSeconds(1);

    public static DecodeProfile Run(Qwen2ForCausalLM model, int batch, int position, IReadOnlyList<int> prompt, int repetitions = 9)
    {
        var c = model.Config;
        var dtype = model.Dtype;
        bool mixed = dtype != ScalarType.Float32;
        bool narrowKv = model.KvDtype != ScalarType.Float32;
        int maxLength = position + 2;
        using var cache = new KvCache(c, batch, maxLength, model.Device, model.KvDtype);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        // As the engine runs a step: torch on one thread and the kernel team on the others when the step's matmuls run
        // in the host or native kernels.
        using var pass = model.HostKernelStep(batch);
        // A cache filled to the step's position: the prompt prefilled into slot 0 and copied to the others, then random tokens.
        var promptIds = tensor(prompt.Take(position).Select(i => (long)i).ToArray(), device: model.Device).unsqueeze(0);
        model.Prefill(promptIds, cache, 0, 0);
        cache.CopyPrefix(0, [.. Enumerable.Range(1, batch - 1)], (int)promptIds.shape[1]);
        var ids = randint(c.VocabSize, [batch], dtype: ScalarType.Int64, device: model.Device);
        long[] slots = [.. Enumerable.Range(0, batch).Select(i => (long)i)];
        long[] positions = [.. Enumerable.Repeat((long)position, batch)];

        // Every tensor handle the step creates, nested dispose scopes included.
        var stats = DisposeScopeManager.Statistics;
        long created = stats.CreatedInScopeCount + stats.CreatedOutsideScopeCount;
        using (NewDisposeScope()) model.Decode(ids, cache, slots, positions);
        long tensorsPerStep = stats.CreatedInScopeCount + stats.CreatedOutsideScopeCount - created;
        Tensor logits = model.Decode(ids, cache, slots, positions).Logits;
        // Tiered compilation: the forward's managed code (layers, TorchSharp's wrappers) runs unoptimised for its first ~30
        // calls, and tier-1 code comes only after a quiet 100 ms. Measured on the tiny bench shape, the third round of
        // seven forwards was 1.5 against 2.2 ms for the first (B = 32), 0.49 against 0.87 (B = 1): warm up first.
        var warmup = Stopwatch.StartNew();
        for (int i = 0; i < WarmupForwards || warmup.Elapsed < WarmupTime; i++)
        {
            using var warmupScope = NewDisposeScope();
            model.Decode(ids, cache, slots, positions);
        }
        double forward = Median(repetitions, () => model.Decode(ids, cache, slots, positions));

        // Activations at the step's shapes.
        long h = c.HiddenSize, ffn = c.IntermediateSize;
        // The matmuls exactly as the decoder runs them (host kernel or torch, with its casts).
        var stepContext = new LayerContext(batch, 1, dtype, RecordsGradients: false, model.HostKernelsAllowed, model.KvDtype, Decoding: true);
        var x32 = randn(batch, 1, h, device: model.Device);
        var xIn = x32;
        var attnIn = randn(batch, 1, c.NumAttentionHeads * c.HeadDim, device: model.Device);
        var gatedIn = randn(batch, 1, ffn, device: model.Device);
        var layers = model.Body.Layers;

        double matmuls = Median(repetitions, () =>
        {
            foreach (var layer in layers)
            {
                using var layerScope = NewDisposeScope();
                // One scope per layer, as Qwen2Body.Forward frees each layer's tensors: without it a replay allocated all 24
                // layers' outputs on fresh pages, and on this VM a page fault costs ~10 µs (the element-wise class read
                // 25 ms of an 80 ms forward, replaying ops that take ~3 ms inside it).
                Qwen2Projection.Apply(xIn, layer.Attention.QkvWeight, layer.Attention.QkvBias, stepContext);
                Qwen2Projection.Apply(attnIn, layer.Attention.OutWeight, null, stepContext);
                Qwen2Projection.Apply(xIn, layer.Mlp.GateUpWeight, null, stepContext);
                Qwen2Projection.Apply(gatedIn, layer.Mlp.DownWeight, null, stepContext);
            }
        });

        var final32 = randn(batch, h, device: model.Device);
        double lmHead = Median(repetitions, () => Qwen2ForCausalLM.HeadLogits(final32, model.HeadWeight, stepContext));

        // The decode attention plan as Qwen2Attention runs it, with this step's index tensors.
        var first = layers[0].Attention;
        int heads = first.Heads, kvHeads = first.KvHeads, headDim = first.HeadDim, groups = heads / kvHeads;
        var q = randn(batch, 1, heads, headDim, device: model.Device);
        var k = randn(batch, 1, kvHeads, headDim, device: model.Device).to_type(model.KvDtype);
        var v = randn(batch, 1, kvHeads, headDim, device: model.Device).to_type(model.KvDtype);
        var posT = tensor(positions, device: model.Device);
        var flatT = tensor(slots.Select((s, i) => s * maxLength + positions[i]).ToArray(), device: model.Device);
        var mask = (TorchScalars.Arange(0, position + 1, model.Device).unsqueeze(0) <= posT.unsqueeze(1)).unsqueeze(1).unsqueeze(1);
        var plan = new AttentionPlan.Decode(cache, null, flatT, mask, position + 1, 0, slots, positions);
        bool hostAttention = model.HostKernelsAllowed && HostDecodeAttention.Supports(q, cache.Keys(0), headDim);
        double cacheWrites = Median(repetitions, () =>
        {
            for (int layer = 0; layer < layers.Count; layer++)
            {
                cache.FlatKeys(layer).index_copy_(0, flatT, k);
                cache.FlatValues(layer).index_copy_(0, flatT, v);
            }
        });
        double attention = Median(repetitions, () =>
        {
            for (int layer = 0; layer < layers.Count; layer++)
            {
                using var layerScope = NewDisposeScope();
                if (hostAttention)
                {
                    HostDecodeAttention.Run(q, cache.Keys(layer), cache.Values(layer), slots, positions, heads, kvHeads, headDim);
                    continue;
                }
                var kRows = Qwen2Attention.ReadRows(cache.Keys(layer), plan, batch);
                var vRows = Qwen2Attention.ReadRows(cache.Values(layer), plan, batch);
                var kk = (narrowKv ? kRows.to_type(ScalarType.Float32) : kRows).permute(0, 2, 1, 3);
                var vv = (narrowKv ? vRows.to_type(ScalarType.Float32) : vRows).permute(0, 2, 1, 3);
                F.scaled_dot_product_attention(q.view(batch, kvHeads, groups, headDim), kk, vv, mask).reshape(batch, 1, heads * headDim);
            }
        });

        double norms = Median(repetitions, () =>
        {
            foreach (var layer in layers)
            {
                using var layerScope = NewDisposeScope();
                layer.InputNorm.Forward(x32, stepContext);
                layer.PostAttentionNorm.Forward(x32, stepContext);
            }
            model.Body.FinalNorm.Forward(x32, stepContext);
        });

        // Everything between the matmuls that is not attention or a norm, per layer, as the layer runs it.
        long qkWidth = (heads + kvHeads) * headDim;
        // bf16 through torch rounds each matmul's input and widens its output; the host kernel takes and returns fp32.
        bool castsAroundMatmuls = mixed && !stepContext.HostKernels;
        var qkvOut = randn(batch, 1, qkWidth + kvHeads * headDim, device: model.Device).to_type(castsAroundMatmuls ? dtype : ScalarType.Float32);
        var cos = model.RopeCos.index_select(0, posT).view(batch, 1, 1, -1);
        var sin = model.RopeSinSigned.index_select(0, posT).view(batch, 1, 1, -1);
        var gateUpOut = randn(batch, 1, 2 * ffn, device: model.Device).to_type(castsAroundMatmuls ? dtype : ScalarType.Float32);
        var blockOut = randn(batch, 1, h, device: model.Device).to_type(castsAroundMatmuls ? dtype : ScalarType.Float32);
        double elementwise = Median(repetitions, () =>
        {
            for (int layer = 0; layer < layers.Count; layer++)
            {
                using var layerScope = NewDisposeScope();
                if (castsAroundMatmuls) { x32.to_type(dtype); x32.to_type(dtype); }
                var qkv32 = castsAroundMatmuls ? qkvOut.narrow(-1, 0, qkWidth).to_type(ScalarType.Float32) : qkvOut.narrow(-1, 0, qkWidth);
                var qk = Rotary.Apply(qkv32.view(batch, 1, heads + kvHeads, headDim), cos, sin);
                qk.narrow(2, 0, heads);
                var kPart = qk.narrow(2, heads, kvHeads);
                if (narrowKv) kPart.to_type(model.KvDtype);
                var vPart = qkvOut.narrow(-1, qkWidth, kvHeads * headDim).view(batch, 1, kvHeads, headDim);
                if (narrowKv && !castsAroundMatmuls) vPart.to_type(model.KvDtype); // fp32 matmul output rounded for the cache
                var gu = castsAroundMatmuls ? gateUpOut.to_type(ScalarType.Float32) : gateUpOut.clone();
                var gated = Qwen2Mlp.Gate(gu, (int)ffn, stepContext);
                if (castsAroundMatmuls) gated.to_type(dtype);
                var attnOut = castsAroundMatmuls ? blockOut.to_type(ScalarType.Float32) : x32.clone();
                attnOut.add_(x32, TorchScalars.One);
                var mlpOut = castsAroundMatmuls ? blockOut.to_type(ScalarType.Float32) : x32.clone();
                mlpOut.add_(attnOut, TorchScalars.One);
            }
        });
        if (!castsAroundMatmuls)
        {
            // fp32 has no casts: the clones above stand in for the fresh block outputs the adds write into; take them out.
            double clones = Median(repetitions, () =>
            {
                for (int layer = 0; layer < layers.Count; layer++)
                {
                    using var layerScope = NewDisposeScope();
                    gateUpOut.clone(); x32.clone(); x32.clone();
                }
            });
            elementwise = Math.Max(0, elementwise - clones);
        }

        double indexTensors = Median(repetitions, () =>
        {
            var p = tensor(positions, device: model.Device);
            tensor(slots.Select((s, i) => s * maxLength + positions[i]).ToArray(), device: model.Device);
            (TorchScalars.Arange(0, position + 1, model.Device).unsqueeze(0) <= p.unsqueeze(1)).unsqueeze(1).unsqueeze(1);
            var flat = p.view(batch, 1).reshape(-1);
            model.RopeCos.index_select(0, flat).view(batch, 1, 1, -1);
            model.RopeSinSigned.index_select(0, flat).view(batch, 1, 1, -1);
        });

        var sampled = randint(c.VocabSize, [batch], dtype: ScalarType.Int64, device: model.Device);
        double readBack = Median(repetitions, () => sampled.cpu().data<long>().ToArray());

        var random = new Random(1);
        double sampling = Median(repetitions, () =>
            TokenSampler.Sample(logits, null, [.. Enumerable.Range(0, batch).Select(_ => new RowSampling(0.8, 0.95, 0, 1.0, random.NextDouble()))]));

        return new DecodeProfile(batch, position, TorchSettings.DtypeName(dtype), forward, matmuls, lmHead, cacheWrites, attention, norms, elementwise,
            indexTensors, readBack, sampling, tensorsPerStep);
    }

    /// <summary>Median milliseconds of <paramref name="action"/> after one warm-up, each run in its own dispose scope.</summary>
    private static double Median(int repetitions, Action action)
    {
        var times = new double[repetitions];
        for (int i = -1; i < repetitions; i++)
        {
            using var scope = NewDisposeScope();
            var timer = Stopwatch.StartNew();
            action();
            if (i >= 0) times[i] = timer.Elapsed.TotalMilliseconds;
        }
        Array.Sort(times);
        return times[repetitions / 2];
    }
}
