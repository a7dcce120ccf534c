using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using MetaStone.Model.Generation;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model.Kernels;

/// <summary>
/// The attention of one decode step on the CPU, read straight from the KV cache: for each row and KV head, the scores of
/// the row's query heads against its keys 0..position, softmax, and the weighted sum of its values — fp32 arithmetic over
/// fp32 or bf16 cache rows, as the torch path (SDPA over the cache widened to fp32).
/// </summary>
/// <remarks>
/// Why by hand: measured per op class on the 0.5B shape at B = 32 (24 layers, ~80 positions), the torch path — gather or
/// slice of the cache rows, their bf16 → fp32 casts, the permutes and SDPA with a [B, 1, 1, L] mask — took 15 ms of a
/// 124 ms forward, ~0.6 ms per layer for ~1.3 MB of keys and values; on the engine benchmark's tiny shape it was 2.0 of
/// 3.6 ms. Here a (row, KV head) pair reads its keys and values once, in place, and pairs are split over the kernel team.
/// </remarks>
internal static unsafe class HostDecodeAttention
{
    /// <summary>True when the cache and the query can be read in place: CPU, fp32 query with unit stride on the head
    /// dimension, an fp32 or bf16 contiguous cache, and a head dimension of whole 16-float vectors.</summary>
    public static bool Supports(Tensor q, Tensor cache, int headDim) =>
        HostLinear.IsSupported && q.device_type == DeviceType.CPU && cache.device_type == DeviceType.CPU && q.dtype == ScalarType.Float32
        && (cache.dtype == ScalarType.Float32 || cache.dtype == ScalarType.BFloat16) && cache.is_contiguous()
        && q.stride(-1) == 1 && headDim % 16 == 0;

    /// <param name="q">[B, 1, heads, hd] fp32 after RoPE (any strides on the first three dimensions).</param>
    /// <param name="keys">The layer's key cache [slots, maxLength, kvHeads, hd] (fp32 or bf16), this step's keys written.</param>
    /// <param name="values">The value cache, same layout.</param>
    /// <param name="slots">Row i's cache slot.</param>
    /// <param name="positions">Row i's position: it attends to keys 0..positions[i].</param>
    /// <returns>[B, 1, heads·hd] fp32.</returns>
    public static Tensor Run(Tensor q, Tensor keys, Tensor values, long[] slots, long[] positions, int heads, int kvHeads, int headDim)
    {
        int b = slots.Length;
        // Everything below is read through raw pointers: a wrong shape or slot would read outside the tensors.
        long[] cacheShape = [keys.shape[0], keys.shape[1], kvHeads, headDim];
        if (keys.dim() != 4 || !keys.shape.SequenceEqual(cacheShape) || !values.shape.SequenceEqual(cacheShape) || values.dtype != keys.dtype || !values.is_contiguous())
            throw new ArgumentException($"keys and values must both be contiguous [slots, maxLength, {kvHeads}, {headDim}] of one dtype, got [{string.Join(", ", keys.shape)}] and [{string.Join(", ", values.shape)}]");
        if (heads % kvHeads != 0 || q.dim() != 4 || q.shape[0] != b || q.shape[1] != 1 || q.shape[2] != heads || q.shape[3] != headDim || positions.Length != b)
            throw new ArgumentException($"q must be [{b}, 1, {heads}, {headDim}] with {heads} heads a multiple of {kvHeads} KV heads and one position per row, got [{string.Join(", ", q.shape)}]");
        int maxLength = (int)keys.shape[1];
        int longest = 0;
        for (int i = 0; i < b; i++)
        {
            if ((ulong)positions[i] >= (ulong)maxLength) throw new ArgumentException($"position {positions[i]} is outside the cache's {maxLength}");
            if ((ulong)slots[i] >= (ulong)keys.shape[0]) throw new ArgumentException($"slot {slots[i]} is outside the cache's {keys.shape[0]}");
            longest = Math.Max(longest, (int)positions[i] + 1);
        }
        var output = empty([b, 1, heads * headDim], dtype: ScalarType.Float32, device: q.device);
        fixed (long* slotP = slots)
        fixed (long* positionP = positions)
        {
            var job = new AttentionJob(
                (float*)HostLinear.DataPointer(q), q.stride(0), q.stride(2),
                (void*)HostLinear.DataPointer(keys), (void*)HostLinear.DataPointer(values), keys.dtype == ScalarType.BFloat16, maxLength,
                slotP, positionP, (float*)HostLinear.DataPointer(output), b, heads, kvHeads, headDim, longest);
            // The team's threads only inside a host-kernel pass, where torch runs on one thread. Between torch ops on two
            // threads a kernel worker fights torch's spinning OpenMP worker for the second core: measured on the 0.5B
            // shape at B = 32, the forward took 145–212 ms that way, 115–133 ms on the caller alone, 119–141 ms with
            // torch's attention (one sequence: 24–25 ms either way, against 25–27 ms with torch's).
            KernelTeam.Shared.Run(ref job, HostKernelPass.IsActive ? HostKernelPass.Threads : 1);
        }
        GC.KeepAlive(q);   // read through raw pointers above
        GC.KeepAlive(keys);
        GC.KeepAlive(values);
        return output;
    }

    private readonly struct AttentionJob(float* q, long qRowStride, long qHeadStride, void* keys, void* values, bool bf16, int maxLength,
        long* slots, long* positions, float* output, int rows, int heads, int kvHeads, int headDim, int longest) : ITeamJob
    {
        private int Groups => heads / kvHeads;

        // A (row, KV head) pair is ~groups × positions × hd × 4 flops: worth a second thread only when there are enough
        // (the shipped tiny model's few candidates stay on the caller, as waking and waiting for a worker costs more there).
        public int PartsFor(int threads) => (long)rows * kvHeads * Groups * longest * headDim < 256 * 1024 ? 1 : threads;

        // Each query head's scores over the longest row's positions, then one 1 / Σ exp per head.
        public int ScratchFloats => Groups * (longest + 16) + Groups;

        public void RunPart(int part, int parts, float* scratch)
        {
            // A contiguous run of pairs per part, so a row's KV heads, whose cache rows interleave, are read by one thread
            // one after the other (the second from L2). Interleaving pairs over the threads instead had each thread stream
            // every other 256 bytes from memory: attention of a 0.5B k = 32 step 7.4 → 5.4 ms, alternated.
            int pairs = rows * kvHeads;
            int from = (int)((long)pairs * part / parts), to = (int)((long)pairs * (part + 1) / parts);
            for (int pair = from; pair < to; pair++)
            {
                int row = pair / kvHeads, kv = pair % kvHeads;
                if (bf16) Pair<Bf16Weights>(row, kv, scratch);
                else Pair<Fp32Weights>(row, kv, scratch);
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Pair<TCache>(int row, int kv, float* scores) where TCache : IWeightLoader
        {
            int groups = Groups, length = (int)positions[row] + 1, vectors = headDim / 16, stride = longest + 16;
            long keyStride = (long)kvHeads * headDim;                        // elements from one position to the next
            long first = (slots[row] * maxLength * kvHeads + kv) * headDim;  // position 0 of this slot and KV head
            float scale = 1f / MathF.Sqrt(headDim);
            float* qRow = q + row * qRowStride;

            // Scores: each key once, against the group's query heads four at a time (a partial block repeats its last
            // head), the four dot products reduced together (VectorSums.Sum4: a horizontal sum per key and head was
            // most of this loop's time).
            // Groups of one or two heads (the tiny models' GQA) fill the four lanes with two or four positions instead, so
            // no lane repeats work.
            int positionsPerBlock = groups <= 2 ? 4 / groups : 1;
            if (vectors == 4)
            {
                // Head dimension 64 (Qwen2-0.5B, the tiny models): the queries stay in registers for the whole row.
                if (groups == 2) ScoresTwoHeads64<TCache>(qRow + kv * groups * qHeadStride, qHeadStride, first, keyStride, length, scale, scores, stride);
                else if (groups == 1) ScoresOneHead64<TCache>(qRow + kv * qHeadStride, first, keyStride, length, scale, scores);
                else ScoresFourHeads64<TCache>(qRow + kv * groups * qHeadStride, qHeadStride, groups, first, keyStride, length, scale, scores, stride);
            }
            else if (positionsPerBlock > 1)
            {
                for (int j = 0; j < length; j += positionsPerBlock)
                {
                    // Lane l: head l % groups at position j + l / groups (the last position again past the row's end).
                    float* q0 = qRow + kv * groups * qHeadStride, q1 = qRow + (kv * groups + 1 % groups) * qHeadStride;
                    float* q2 = qRow + (kv * groups + 2 % groups) * qHeadStride, q3 = qRow + (kv * groups + 3 % groups) * qHeadStride;
                    long k0 = first + j * keyStride, k1 = first + Math.Min(j + 1 / groups, length - 1) * keyStride;
                    long k2 = first + Math.Min(j + 2 / groups, length - 1) * keyStride, k3 = first + Math.Min(j + 3 / groups, length - 1) * keyStride;
                    Vector512<float> d0 = default, d1 = default, d2 = default, d3 = default;
                    for (int v = 0; v < vectors; v++)
                    {
                        d0 = Vector512.FusedMultiplyAdd(Vector512.Load(q0 + v * 16), TCache.Load(keys, k0 + v * 16), d0);
                        d1 = Vector512.FusedMultiplyAdd(Vector512.Load(q1 + v * 16), TCache.Load(keys, k1 + v * 16), d1);
                        d2 = Vector512.FusedMultiplyAdd(Vector512.Load(q2 + v * 16), TCache.Load(keys, k2 + v * 16), d2);
                        d3 = Vector512.FusedMultiplyAdd(Vector512.Load(q3 + v * 16), TCache.Load(keys, k3 + v * 16), d3);
                    }
                    var four = VectorSums.Sum4(d0, d1, d2, d3) * scale;
                    for (int lane = 0; lane < 4; lane++)
                    {
                        int position = j + lane / groups;
                        if (position < length) scores[lane % groups * stride + position] = four.GetElement(lane);
                    }
                }
            }
            else for (int j = 0; j < length; j++)
            {
                long k = first + j * keyStride;
                for (int g0 = 0; g0 < groups; g0 += 4)
                {
                    float* q0 = qRow + (kv * groups + g0) * qHeadStride;
                    float* q1 = qRow + (kv * groups + Math.Min(g0 + 1, groups - 1)) * qHeadStride;
                    float* q2 = qRow + (kv * groups + Math.Min(g0 + 2, groups - 1)) * qHeadStride;
                    float* q3 = qRow + (kv * groups + Math.Min(g0 + 3, groups - 1)) * qHeadStride;
                    Vector512<float> d0 = default, d1 = default, d2 = default, d3 = default;
                    for (int v = 0; v < vectors; v++)
                    {
                        var key = TCache.Load(keys, k + v * 16);
                        d0 = Vector512.FusedMultiplyAdd(Vector512.Load(q0 + v * 16), key, d0);
                        d1 = Vector512.FusedMultiplyAdd(Vector512.Load(q1 + v * 16), key, d1);
                        d2 = Vector512.FusedMultiplyAdd(Vector512.Load(q2 + v * 16), key, d2);
                        d3 = Vector512.FusedMultiplyAdd(Vector512.Load(q3 + v * 16), key, d3);
                    }
                    var four = VectorSums.Sum4(d0, d1, d2, d3) * scale;
                    float* s0 = scores + g0 * stride + j;
                    s0[0] = four.GetElement(0);
                    if (g0 + 1 < groups) s0[stride] = four.GetElement(1);
                    if (g0 + 2 < groups) s0[2 * stride] = four.GetElement(2);
                    if (g0 + 3 < groups) s0[3 * stride] = four.GetElement(3);
                }
            }

            float* inverses = scores + groups * stride;   // 1 / Σ exp of each query head
            for (int g = 0; g < groups; g++)
            {
                // Softmax over the row's positions, in fp32.
                float* s = scores + g * stride;
                float max = float.NegativeInfinity;
                for (int j = 0; j < length; j++) max = s[j] > max ? s[j] : max;   // (MathF.Max's NaN rules cost a branch a position)
                float sum = 0;
                int i = 0;
                var m = Vector512.Create(max);
                for (; i <= length - 16; i += 16)
                {
                    var e = HostTokenSampler.ExpNonPositive(Vector512.Load(s + i) - m);
                    e.Store(s + i);
                    sum += VectorSums.Sum(e);
                }
                for (; i < length; i++) sum += s[i] = MathF.Exp(s[i] - max);
                inverses[g] = 1f / sum;
            }

            // Weighted sums of the values, eight independent accumulators at a time (one accumulator per head and vector
            // made a chain of dependent multiply-adds as long as the row, ~4 cycles a position). Two register tilings of
            // the same sum, kept apart because a shared one would hold its accumulators in memory (measured 2–3× slower).
            float* outRow = output + (long)row * heads * headDim + kv * groups * headDim;
            if (groups <= 2 && vectors % 4 == 0)
            {
                // One or two heads: two heads (the second repeated when alone) by four value vectors.
                float* s0 = scores, s1 = scores + (groups - 1) * stride;
                for (int v = 0; v < vectors; v += 4)
                {
                    long at0 = first + v * 16;
                    Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
                    Vector512<float> b0 = default, b1 = default, b2 = default, b3 = default;
                    for (int j = 0; j < length; j++)
                    {
                        long at = at0 + j * keyStride;
                        var x0 = TCache.Load(values, at);
                        var x1 = TCache.Load(values, at + 16);
                        var x2 = TCache.Load(values, at + 32);
                        var x3 = TCache.Load(values, at + 48);
                        var w0 = Vector512.Create(s0[j]);
                        var w1 = Vector512.Create(s1[j]);
                        a0 = Vector512.FusedMultiplyAdd(w0, x0, a0); a1 = Vector512.FusedMultiplyAdd(w0, x1, a1);
                        a2 = Vector512.FusedMultiplyAdd(w0, x2, a2); a3 = Vector512.FusedMultiplyAdd(w0, x3, a3);
                        b0 = Vector512.FusedMultiplyAdd(w1, x0, b0); b1 = Vector512.FusedMultiplyAdd(w1, x1, b1);
                        b2 = Vector512.FusedMultiplyAdd(w1, x2, b2); b3 = Vector512.FusedMultiplyAdd(w1, x3, b3);
                    }
                    StoreHead(outRow, 0, groups, v, vectors, a0, a1, inverses);
                    StoreHead(outRow, 0, groups, v + 2, vectors, a2, a3, inverses);
                    StoreHead(outRow, 1, groups, v, vectors, b0, b1, inverses);
                    StoreHead(outRow, 1, groups, v + 2, vectors, b2, b3, inverses);
                }
                return;
            }
            // Four heads by two value vectors; a group's last block repeats its last head instead of branching per position.
            for (int g0 = 0; g0 < groups; g0 += 4)
            {
                float* s0 = scores + Math.Min(g0, groups - 1) * stride, s1 = scores + Math.Min(g0 + 1, groups - 1) * stride;
                float* s2 = scores + Math.Min(g0 + 2, groups - 1) * stride, s3 = scores + Math.Min(g0 + 3, groups - 1) * stride;
                for (int v = 0; v < vectors; v += 2)
                {
                    long low = first + v * 16, high = v + 1 < vectors ? low + 16 : low;
                    Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
                    Vector512<float> b0 = default, b1 = default, b2 = default, b3 = default;
                    for (int j = 0; j < length; j++)
                    {
                        long at = j * keyStride;
                        var x = TCache.Load(values, low + at);
                        var y = TCache.Load(values, high + at);
                        var w0 = Vector512.Create(s0[j]);
                        var w1 = Vector512.Create(s1[j]);
                        var w2 = Vector512.Create(s2[j]);
                        var w3 = Vector512.Create(s3[j]);
                        a0 = Vector512.FusedMultiplyAdd(w0, x, a0); b0 = Vector512.FusedMultiplyAdd(w0, y, b0);
                        a1 = Vector512.FusedMultiplyAdd(w1, x, a1); b1 = Vector512.FusedMultiplyAdd(w1, y, b1);
                        a2 = Vector512.FusedMultiplyAdd(w2, x, a2); b2 = Vector512.FusedMultiplyAdd(w2, y, b2);
                        a3 = Vector512.FusedMultiplyAdd(w3, x, a3); b3 = Vector512.FusedMultiplyAdd(w3, y, b3);
                    }
                    StoreHead(outRow, g0, groups, v, vectors, a0, b0, inverses);
                    StoreHead(outRow, g0 + 1, groups, v, vectors, a1, b1, inverses);
                    StoreHead(outRow, g0 + 2, groups, v, vectors, a2, b2, inverses);
                    StoreHead(outRow, g0 + 3, groups, v, vectors, a3, b3, inverses);
                }
            }
        }

        // The three score loops below hold the queries in registers across positions. Reloading them for every position
        // (the general loops above) made the scores bound by loads: 16 query loads and 4 key loads per 16 multiply-adds
        // at four heads. Here a position costs its four key loads.

        /// <summary>Scores of a group of two heads with 64 dimensions: two positions per four-way sum (lanes: head 0 and 1 at
        /// position j, then at j + 1).</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void ScoresTwoHeads64<TCache>(float* q0, long qHeadStride, long first, long keyStride, int length, float scale, float* scores, int stride)
            where TCache : IWeightLoader
        {
            float* q1 = q0 + qHeadStride;
            var a0 = Vector512.Load(q0); var a1 = Vector512.Load(q0 + 16); var a2 = Vector512.Load(q0 + 32); var a3 = Vector512.Load(q0 + 48);
            var b0 = Vector512.Load(q1); var b1 = Vector512.Load(q1 + 16); var b2 = Vector512.Load(q1 + 32); var b3 = Vector512.Load(q1 + 48);
            float* s1 = scores + stride;
            for (int j = 0; j < length; j += 2)
            {
                long k = first + j * keyStride, next = first + Math.Min(j + 1, length - 1) * keyStride;
                var x0 = TCache.Load(keys, k); var x1 = TCache.Load(keys, k + 16); var x2 = TCache.Load(keys, k + 32); var x3 = TCache.Load(keys, k + 48);
                var y0 = TCache.Load(keys, next); var y1 = TCache.Load(keys, next + 16); var y2 = TCache.Load(keys, next + 32); var y3 = TCache.Load(keys, next + 48);
                var d0 = Dot64(a0, a1, a2, a3, x0, x1, x2, x3);
                var d1 = Dot64(b0, b1, b2, b3, x0, x1, x2, x3);
                var d2 = Dot64(a0, a1, a2, a3, y0, y1, y2, y3);
                var d3 = Dot64(b0, b1, b2, b3, y0, y1, y2, y3);
                var four = VectorSums.Sum4(d0, d1, d2, d3) * scale;
                scores[j] = four.GetElement(0);
                s1[j] = four.GetElement(1);
                if (j + 1 < length)
                {
                    scores[j + 1] = four.GetElement(2);
                    s1[j + 1] = four.GetElement(3);
                }
            }
        }

        /// <summary>Scores of a lone head with 64 dimensions, four positions per four-way sum.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void ScoresOneHead64<TCache>(float* q0, long first, long keyStride, int length, float scale, float* scores)
            where TCache : IWeightLoader
        {
            var a0 = Vector512.Load(q0); var a1 = Vector512.Load(q0 + 16); var a2 = Vector512.Load(q0 + 32); var a3 = Vector512.Load(q0 + 48);
            for (int j = 0; j < length; j += 4)
            {
                long k0 = first + j * keyStride, k1 = first + Math.Min(j + 1, length - 1) * keyStride;
                long k2 = first + Math.Min(j + 2, length - 1) * keyStride, k3 = first + Math.Min(j + 3, length - 1) * keyStride;
                var d0 = Dot64(a0, a1, a2, a3, TCache.Load(keys, k0), TCache.Load(keys, k0 + 16), TCache.Load(keys, k0 + 32), TCache.Load(keys, k0 + 48));
                var d1 = Dot64(a0, a1, a2, a3, TCache.Load(keys, k1), TCache.Load(keys, k1 + 16), TCache.Load(keys, k1 + 32), TCache.Load(keys, k1 + 48));
                var d2 = Dot64(a0, a1, a2, a3, TCache.Load(keys, k2), TCache.Load(keys, k2 + 16), TCache.Load(keys, k2 + 32), TCache.Load(keys, k2 + 48));
                var d3 = Dot64(a0, a1, a2, a3, TCache.Load(keys, k3), TCache.Load(keys, k3 + 16), TCache.Load(keys, k3 + 32), TCache.Load(keys, k3 + 48));
                var four = VectorSums.Sum4(d0, d1, d2, d3) * scale;
                for (int lane = 0; lane < 4 && j + lane < length; lane++) scores[j + lane] = four.GetElement(lane);
            }
        }

        /// <summary>Scores of a group of three or more heads with 64 dimensions, four heads at a time (a partial block repeats
        /// its last head): each key is read once per block of heads, the second time from L1.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void ScoresFourHeads64<TCache>(float* group, long qHeadStride, int groups, long first, long keyStride, int length, float scale, float* scores, int stride)
            where TCache : IWeightLoader
        {
            for (int g0 = 0; g0 < groups; g0 += 4)
            {
                float* q0 = group + g0 * qHeadStride, q1 = group + Math.Min(g0 + 1, groups - 1) * qHeadStride;
                float* q2 = group + Math.Min(g0 + 2, groups - 1) * qHeadStride, q3 = group + Math.Min(g0 + 3, groups - 1) * qHeadStride;
                var a0 = Vector512.Load(q0); var a1 = Vector512.Load(q0 + 16); var a2 = Vector512.Load(q0 + 32); var a3 = Vector512.Load(q0 + 48);
                var b0 = Vector512.Load(q1); var b1 = Vector512.Load(q1 + 16); var b2 = Vector512.Load(q1 + 32); var b3 = Vector512.Load(q1 + 48);
                var c0 = Vector512.Load(q2); var c1 = Vector512.Load(q2 + 16); var c2 = Vector512.Load(q2 + 32); var c3 = Vector512.Load(q2 + 48);
                var e0 = Vector512.Load(q3); var e1 = Vector512.Load(q3 + 16); var e2 = Vector512.Load(q3 + 32); var e3 = Vector512.Load(q3 + 48);
                float* s0 = scores + g0 * stride;
                int heads = Math.Min(4, groups - g0);
                for (int j = 0; j < length; j++)
                {
                    long k = first + j * keyStride;
                    var x0 = TCache.Load(keys, k); var x1 = TCache.Load(keys, k + 16); var x2 = TCache.Load(keys, k + 32); var x3 = TCache.Load(keys, k + 48);
                    var d0 = Dot64(a0, a1, a2, a3, x0, x1, x2, x3);
                    var d1 = Dot64(b0, b1, b2, b3, x0, x1, x2, x3);
                    var d2 = Dot64(c0, c1, c2, c3, x0, x1, x2, x3);
                    var d3 = Dot64(e0, e1, e2, e3, x0, x1, x2, x3);
                    var four = VectorSums.Sum4(d0, d1, d2, d3) * scale;
                    s0[j] = four.GetElement(0);
                    if (heads > 1) s0[stride + j] = four.GetElement(1);
                    if (heads > 2) s0[2 * stride + j] = four.GetElement(2);
                    if (heads > 3) s0[3 * stride + j] = four.GetElement(3);
                }
            }
        }

        /// <summary>q·k over 64 dimensions as four vectors, summed in the order of the general loops (bit-identical).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector512<float> Dot64(Vector512<float> q0, Vector512<float> q1, Vector512<float> q2, Vector512<float> q3,
            Vector512<float> k0, Vector512<float> k1, Vector512<float> k2, Vector512<float> k3) =>
            Vector512.FusedMultiplyAdd(q3, k3, Vector512.FusedMultiplyAdd(q2, k2, Vector512.FusedMultiplyAdd(q1, k1, q0 * k0)));

        /// <summary>Head <paramref name="g"/>'s value vectors v (and v + 1 when there is one), normalised; nothing for a
        /// head past the group (the repeated last head of a partial block).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void StoreHead(float* outRow, int g, int groups, int v, int vectors, Vector512<float> low, Vector512<float> high, float* inverses)
        {
            if (g >= groups) return;
            float* o = outRow + g * headDim + v * 16;
            var inverse = Vector512.Create(inverses[g]);
            (low * inverse).Store(o);
            if (v + 1 < vectors) (high * inverse).Store(o + 16);
        }
    }
}
