using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using MetaStone.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model.Generation;

/// <summary>
/// <see cref="TokenSampler"/> for fp32 logits in CPU memory: the same rules (repetition penalty, temperature, top-k ∩
/// top-p, inverse CDF driven by the row's own uniform), computed one row at a time in managed SIMD code over the row's
/// memory instead of ~30 torch ops over [B, V] tensors.
/// </summary>
/// <remarks>
/// <para>Why by hand: measured in the engine on the 0.5B shape (vocabulary 151,936) at B = 32, torch's sampling took
/// 25–33 ms of a ~165 ms best-of-32 step at top-p 0.95 (topk 4.6 ms, the histogram threshold search 10 ms, masking 5 ms,
/// each op a full pass over 19 MB) and 2.4 ms of a 31 ms step at one sequence. Here a row is four passes over its own
/// 0.6 MB, which stay in the core's cache: max, exp with its sum, a histogram of the weights, the inverse CDF.</para>
/// <para>The kept set is the sort-based one — a token stays while the mass before it, in descending order, is below
/// top-p and its rank below top-k — found without sorting the row: a histogram of the weights by float exponent and 4
/// mantissa bits (buckets 2^(1/16) wide) locates the bucket the boundary lies in, and only that bucket is sorted. Tokens
/// too light to reach the boundary (below (1 − top-p)·Σ / V each) are skipped by the histogram, which makes peaked rows of
/// trained models cheap. Sampling order: a nucleus of at most <see cref="TokenSampler.CandidatePool"/> tokens is walked in
/// descending order of probability, a larger one in id order; ties go to the lower id. The torch path (GPU logits) walks
/// the same orders, so both pick the same token for the same uniform up to float rounding at a boundary — except with a
/// top-k above 256, where torch's pool grows to the batch's largest top-k and is walked in descending order, and for
/// exact ties, which torch's topk breaks its own way.</para>
/// <para>Every method is compiled optimised on first call (AggressiveOptimization): tier-0 code of these SIMD loops ran
/// a one-row sample 10× slower, for the first ~30 steps of every process.</para>
/// </remarks>
internal static unsafe class HostTokenSampler
{
    // float bits >> 16: 8 exponent and 7 mantissa bits (weights are ≥ 0, so the sign bit is 0): buckets 2^(1/128) wide.
    // With 4 mantissa bits (2^(1/16)) a flat row of random weights put ~6,000 tokens in the boundary bucket, whose sort
    // then cost more than the rest of the row.
    private const int BucketShift = 16;
    private const int Buckets = 1 << (31 - BucketShift);
    private static readonly int TopKey = BitConverter.SingleToInt32Bits(1f) >> BucketShift;   // weights are ≤ 1
    private const int ScanBlock = 512;

    /// <summary>True when <paramref name="logits"/> (and the history) can be read in place: fp32 rows of a CPU tensor.
    /// The loops are Vector512 code: without AVX-512 in hardware they would run emulated, slower than torch.</summary>
    public static bool Supports(Tensor logits, Tensor? history) =>
        HostLinear.IsSupported && logits.device_type == DeviceType.CPU && logits.dtype == ScalarType.Float32 && logits.dim() == 2
        && logits.stride(1) == 1 && logits.stride(0) >= logits.shape[1]
        && (history is null || (history.device_type == DeviceType.CPU && history.dtype == ScalarType.Int64 && history.is_contiguous()));

    /// <param name="logits">[B, V] fp32 on the CPU, rows with unit stride (a row-narrowed buffer is fine); not modified.</param>
    /// <param name="history">[B, L] int64 ids each row penalises (see <see cref="TokenSampler.Sample"/>), or null.</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static long[] Sample(Tensor logits, Tensor? history, RowSampling[] rows)
    {
        int b = rows.Length;
        if (logits.shape[0] < b) throw new ArgumentException($"{b} sampling rows for {logits.shape[0]} logit rows");
        int v = checked((int)logits.shape[1]);
        if (history is not null && (history.dim() != 2 || history.shape[0] < b))
            throw new ArgumentException($"history must be [B ≥ {b}, L], got [{string.Join(", ", history.shape)}]", nameof(history));
        long rowStride = logits.stride(0);
        float* first = (float*)HostLinear.DataPointer(logits);
        long* ids = history is null ? null : (long*)HostLinear.DataPointer(history);
        int historyLength = history is null ? 0 : checked((int)history.shape[1]);
        var sampled = new long[b];
        // Rows split over the kernel team's threads (each row is independent; 0.1–0.3 ms of work on Qwen's vocabulary).
        fixed (RowSampling* settings = rows)
        fixed (long* output = sampled)
        {
            var job = new SamplingJob(first, rowStride, v, ids, historyLength, settings, output, b);
            // Both threads even right after a torch forward on two (unlike HostDecodeAttention, which runs between torch
            // ops): measured in the engine at B = 32, 218–228 tok/s against 212–213 with the rows on the caller alone.
            KernelTeam.Shared.Run(ref job, HostKernelPass.Threads);
        }
        for (int r = 0; r < b; r++)
        {
            // A row that failed on a team thread fails again here, on the caller's, with its exception.
            if (sampled[r] == FailedRow)
                SampleRow(first + r * rowStride, v, ids is null ? null : ids + (long)r * historyLength, historyLength, rows[r], Scratch, r);
        }
        GC.KeepAlive(logits);   // read through raw pointers above
        GC.KeepAlive(history);
        return sampled;
    }

    private const long FailedRow = long.MinValue;

    private static RowScratch Scratch => t_scratch ??= new RowScratch();

    private readonly struct SamplingJob(float* logits, long rowStride, int v, long* history, int historyLength, RowSampling* rows, long* sampled, int count) : ITeamJob
    {
        // A small vocabulary (the shipped tiny model's 352 tokens) samples every row in microseconds: waking a worker,
        // and waiting for it on a machine the silos oversubscribe, costs more than it saves.
        public int PartsFor(int threads) => (long)count * v < 128 * 1024 ? 1 : Math.Min(threads, count);

        public int ScratchFloats => 0;

        public void RunPart(int part, int parts, float* scratch)
        {
            var rowScratch = Scratch;
            for (int r = part; r < count; r += parts)
            {
                try
                {
                    sampled[r] = SampleRow(logits + r * rowStride, v, history is null ? null : history + (long)r * historyLength, historyLength, rows[r], rowScratch, r);
                }
                catch (Exception)
                {
                    sampled[r] = FailedRow;   // rethrown by the caller (a team worker has no one to throw to)
                }
            }
        }
    }

    [ThreadStatic] private static RowScratch? t_scratch;

    /// <summary>One thread's buffers, grown to the widest vocabulary seen and kept (no per-step allocation).</summary>
    private sealed class RowScratch
    {
        public float[] Penalised = [];
        public float[] Weights = [];
        public readonly double[] BucketMass = new double[Buckets];
        public readonly int[] BucketCount = new int[Buckets];
        public float[] CandidateWeights = [];
        public int[] CandidateIds = [];
        public long[] SortKeys = [];

        public void Ensure(int v)
        {
            if (Weights.Length >= v) return;
            Penalised = new float[v];
            Weights = new float[v];
            CandidateWeights = new float[v];
            CandidateIds = new int[v];
            SortKeys = new long[v];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static long SampleRow(float* logits, int v, long* history, int historyLength, in RowSampling row, RowScratch scratch, int rowIndex)
    {
        scratch.Ensure(v);
        // Repetition penalty into a copy (the caller's logits stay as they are); a repeated id is penalised once.
        float* source = logits;
        fixed (float* penalised = scratch.Penalised)
        {
            if (history is not null && row.RepetitionPenalty != 1.0)
            {
                new ReadOnlySpan<float>(logits, v).CopyTo(new Span<float>(penalised, v));
                float penalty = (float)row.RepetitionPenalty;
                for (int j = 0; j < historyLength; j++)
                {
                    long id = history[j];
                    if ((ulong)id >= (ulong)v) throw new ArgumentException($"history id {id} is outside the vocabulary of {v}");
                    float x = logits[id];
                    penalised[id] = x > 0 ? x / penalty : x * penalty;
                }
                source = penalised;
            }
            if (row.Temperature == 0) return ArgMax(source, v);

            fixed (float* weights = scratch.Weights)
            {
                // The steps of torch's softmax(logits / T): z = x / T in fp32, then exp(z − max z); summed in double.
                float temperature = (float)Math.Max(row.Temperature, 1e-5);
                float zMax = Max(source, v) / temperature;
                double total = ExpAndSum(source, v, temperature, zMax, weights);
                if (!double.IsFinite(total) || !(total > 0))
                    throw new InvalidOperationException($"row {rowIndex}: logits are not finite (the softmax sums to {total})");

                if (row.TopP >= 1 && row.TopK <= 0)
                    return InverseCdfAtLeast(weights, v, 0f, row.Uniform * total);
                return SampleTruncated(weights, v, total, row, scratch);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static long SampleTruncated(float* weights, int v, double total, in RowSampling row, RowScratch scratch)
    {
        double limit = row.TopP < 1 ? row.TopP * total : double.PositiveInfinity;   // keep while the mass before < limit
        long topK = row.TopK > 0 ? row.TopK : long.MaxValue;
        // A token lighter than (1 − top-p)·Σ / V cannot be at the boundary: all of them together weigh less than the
        // (1 − top-p)·Σ the nucleus leaves out. 0.999 keeps that strict under rounding.
        // Weights that underflowed to 0 are never sampled, so they never enter the histogram either: otherwise a top-k
        // above the number of non-zero weights (a confident row at a low temperature) put the boundary in bucket 0 and
        // sorted the whole vocabulary (53 ms per B = 32 step instead of 1.4 ms).
        float floor = MathF.Max(row.TopP < 1 ? (float)((1 - row.TopP) * total / v * 0.999) : 0f, float.Epsilon);

        var mass = scratch.BucketMass;
        var count = scratch.BucketCount;
        int lowKey = BitConverter.SingleToInt32Bits(floor) >> BucketShift;
        Array.Clear(mass, lowKey, TopKey + 1 - lowKey);
        Array.Clear(count, lowKey, TopKey + 1 - lowKey);
        Histogram(weights, v, floor, mass, count);

        // The first bucket, from the heaviest down, at which the mass or the rank reaches its limit holds the boundary.
        double above = 0;
        long rankAbove = 0;
        int boundary = -1;
        for (int key = TopKey; key >= lowKey; key--)
        {
            if (count[key] == 0) continue;
            if (above + mass[key] >= limit || rankAbove + count[key] >= topK) { boundary = key; break; }
            above += mass[key];
            rankAbove += count[key];
        }
        if (boundary < 0)   // rounding: everything above the floor is kept
            return SampleKept(weights, v, floor, int.MaxValue, above, row.Uniform, rankAbove, scratch);

        // Sort only the boundary bucket (descending weight, then ascending id) and keep its prefix.
        float low = MathF.Max(BitConverter.Int32BitsToSingle(boundary << BucketShift), floor);
        float high = BitConverter.Int32BitsToSingle((boundary + 1) << BucketShift);
        int n = Collect(weights, v, low, high, scratch.CandidateWeights, scratch.CandidateIds);
        var bucketWeights = scratch.CandidateWeights.AsSpan(0, n);
        var bucketIds = scratch.CandidateIds.AsSpan(0, n);
        SortDescending(bucketWeights, bucketIds, scratch.SortKeys);
        double kept = above;
        long rank = rankAbove;
        int keptInBucket = 0;
        // The most likely token always stays (as in the torch path), even at a top-p of 0.
        while (keptInBucket < n && (rank == 0 || (kept < limit && rank < topK)))
        {
            kept += bucketWeights[keptInBucket];
            rank++;
            keptInBucket++;
        }
        float threshold = bucketWeights[keptInBucket - 1];
        int lastTieId = bucketIds[keptInBucket - 1];
        // Tokens of the threshold's weight past the cut (a tie the sort split): only then does the id matter.
        bool splitTie = keptInBucket < n && bucketWeights[keptInBucket] == threshold;
        return SampleKept(weights, v, threshold, splitTie ? lastTieId : int.MaxValue, kept, row.Uniform, rank, scratch);
    }

    /// <summary>Samples among the kept tokens (weight above <paramref name="threshold"/>, or equal to it with an id up to
    /// <paramref name="lastTieId"/>): in descending order of weight when they are few (as the torch path's candidate
    /// pool), else in id order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static long SampleKept(float* weights, int v, float threshold, int lastTieId, double keptMass, double uniform, long keptCount, RowScratch scratch)
    {
        double target = uniform * keptMass;
        if (keptCount > TokenSampler.CandidatePool)
        {
            if (lastTieId == int.MaxValue) return InverseCdfAtLeast(weights, v, threshold, target);
            return InverseCdfScalar(weights, v, threshold, lastTieId, target);
        }
        // Few kept: gather them, sort by descending weight (ties by id) and walk the sorted list.
        int n = Collect(weights, v, threshold, float.PositiveInfinity, scratch.CandidateWeights, scratch.CandidateIds);
        var keptWeights = scratch.CandidateWeights.AsSpan(0, n);
        var keptIds = scratch.CandidateIds.AsSpan(0, n);
        SortDescending(keptWeights, keptIds, scratch.SortKeys);
        double acc = 0;
        int last = -1;
        for (int i = 0; i < n; i++)
        {
            if (keptWeights[i] == threshold && keptIds[i] > lastTieId) break;   // sorted: the rest are cut ties
            if (keptWeights[i] <= 0) break;
            acc += keptWeights[i];
            last = keptIds[i];
            if (acc > target) return last;
        }
        return last >= 0 ? last : keptIds[0];
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static long ArgMax(float* x, int v)
    {
        // First index of the maximum, as torch.argmax.
        int best = 0;
        float max = x[0];
        for (int i = 1; i < v; i++)
            if (x[i] > max) { max = x[i]; best = i; }
        return best;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Max(float* x, int v)
    {
        int i = 0;
        float max = float.NegativeInfinity;
        if (v >= 16)
        {
            var acc = Vector512.Create(float.NegativeInfinity);
            for (; i <= v - 16; i += 16) acc = Vector512.Max(acc, Vector512.Load(x + i));
            for (int lane = 0; lane < 16; lane++) max = MathF.Max(max, acc[lane]);
        }
        for (; i < v; i++) max = MathF.Max(max, x[i]);
        return max;
    }

    /// <summary>weights[i] = exp(x[i] / T − zMax); returns their sum (in double).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static double ExpAndSum(float* x, int v, float temperature, float zMax, float* weights)
    {
        int i = 0;
        var t = Vector512.Create(temperature);
        var m = Vector512.Create(zMax);
        var sum = Vector512<double>.Zero;
        for (; i <= v - 16; i += 16)
        {
            var e = ExpNonPositive(Vector512.Load(x + i) / t - m);
            e.Store(weights + i);
            var (lower, upper) = Vector512.Widen(e);
            sum += lower + upper;
        }
        double total = Vector512.Sum(sum);
        for (; i < v; i++)
        {
            float e = MathF.Exp(x[i] / temperature - zMax);
            weights[i] = e;
            total += e;
        }
        return total;
    }

    /// <summary>
    /// e^x for x ≤ 0 (here z − max z), 16 lanes: x = n·ln 2 + r with |r| ≤ ln 2 / 2, e^r by its Taylor polynomial to r⁷
    /// (truncation error &lt; 6e-9 relative), times 2^n through the exponent bits; below −87.3 (fp32 underflow, and −∞
    /// for masked tokens) exactly 0, as torch's exp. Ours rather than Vector512.Exp: CoreLib's is not precompiled for
    /// AVX-512 and ran as tier-0 code for the first ~30 calls of a process (a one-row sample took 0.7 instead of 0.1 ms).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> ExpNonPositive(Vector512<float> x)
    {
        var underflow = Vector512.LessThan(x, Vector512.Create(-87.33f));
        var clamped = Vector512.Max(x, Vector512.Create(-87.33f));
        // n = round(x / ln 2) by the 1.5·2^23 trick (exact for |x / ln 2| < 2^22).
        var shifter = Vector512.Create(12582912f);
        var n = Vector512.FusedMultiplyAdd(clamped, Vector512.Create(1.44269504f), shifter) - shifter;
        var r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-0.693145751953125f), clamped);   // ln 2, high part (exact product)
        r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-1.428606765330187e-06f), r);         // ln 2, low part
        var p = Vector512.Create(1f / 5040);
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1f / 720));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1f / 120));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1f / 24));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1f / 6));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(0.5f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512<float>.One);
        p = Vector512.FusedMultiplyAdd(p, r, Vector512<float>.One);
        // 2^n for n in [−126, 0]: the exponent field n + 127.
        var scale = (Vector512.ConvertToInt32(n) + Vector512.Create(127)) << 23;
        var e = p * scale.AsSingle();
        return Vector512.ConditionalSelect(underflow.AsInt32(), Vector512<int>.Zero, e.AsInt32()).AsSingle();
    }

    /// <summary>Mass and count per bucket of the weights at or above <paramref name="floor"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Histogram(float* weights, int v, float floor, double[] mass, int[] count)
    {
        int i = 0;
        var f = Vector512.Create(floor);
        fixed (double* massP = mass)
        fixed (int* countP = count)
        {
            for (; i <= v - 16; i += 16)
            {
                var w = Vector512.Load(weights + i);
                ulong heavy = Vector512.GreaterThanOrEqual(w, f).ExtractMostSignificantBits();
                while (heavy != 0)
                {
                    int lane = System.Numerics.BitOperations.TrailingZeroCount(heavy);
                    heavy &= heavy - 1;
                    float e = weights[i + lane];
                    int key = BitConverter.SingleToInt32Bits(e) >> BucketShift;
                    massP[key] += e;
                    countP[key]++;
                }
            }
            for (; i < v; i++)
            {
                float e = weights[i];
                if (!(e >= floor)) continue;
                int key = BitConverter.SingleToInt32Bits(e) >> BucketShift;
                massP[key] += e;
                countP[key]++;
            }
        }
    }

    /// <summary>The weights in [low, high) and their ids, in id order; returns how many.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int Collect(float* weights, int v, float low, float high, float[] outWeights, int[] outIds)
    {
        int n = 0, i = 0;
        var lo = Vector512.Create(low);
        var hi = Vector512.Create(high);
        for (; i <= v - 16; i += 16)
        {
            var w = Vector512.Load(weights + i);
            ulong inside = (Vector512.GreaterThanOrEqual(w, lo) & Vector512.LessThan(w, hi)).ExtractMostSignificantBits();
            while (inside != 0)
            {
                int lane = System.Numerics.BitOperations.TrailingZeroCount(inside);
                inside &= inside - 1;
                outWeights[n] = weights[i + lane];
                outIds[n++] = i + lane;
            }
        }
        for (; i < v; i++)
        {
            float e = weights[i];
            if (e >= low && e < high) { outWeights[n] = e; outIds[n++] = i; }
        }
        return n;
    }

    /// <summary>Sorts the pairs by descending weight, then ascending id: one ascending sort of 64-bit keys (the weights are
    /// in [0, 1], so their float bits order as integers).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SortDescending(Span<float> weights, Span<int> ids, long[] keys)
    {
        var k = keys.AsSpan(0, weights.Length);
        for (int i = 0; i < k.Length; i++)
            k[i] = ((long)(int.MaxValue - BitConverter.SingleToInt32Bits(weights[i])) << 32) | (uint)ids[i];
        k.Sort();
        for (int i = 0; i < k.Length; i++)
        {
            weights[i] = BitConverter.Int32BitsToSingle(int.MaxValue - (int)(k[i] >> 32));
            ids[i] = (int)(k[i] & 0xFFFF_FFFF);
        }
    }

    /// <summary>First token (id order) whose running mass among weights ≥ <paramref name="threshold"/> exceeds
    /// <paramref name="target"/>: block sums first, then the one block token by token. Never a zero-weight token.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static long InverseCdfAtLeast(float* weights, int v, float threshold, double target)
    {
        var th = Vector512.Create(threshold);
        double acc = 0;
        int lastPositive = -1;
        for (int start = 0; start < v; start += ScanBlock)
        {
            int end = Math.Min(v, start + ScanBlock);
            double block = BlockSum(weights, start, end, th, threshold);
            if (block > 0 && acc + block > target)
            {
                for (int i = start; i < end; i++)
                {
                    float w = weights[i];
                    if (!(w >= threshold) || w <= 0) continue;
                    acc += w;
                    lastPositive = i;
                    if (acc > target) return i;
                }
                continue;   // rounding between the block sum and the running sum: go on to the next block
            }
            acc += block;
            if (block > 0) lastPositive = LastAtLeast(weights, start, end, threshold);
        }
        return lastPositive >= 0 ? lastPositive : 0;
    }

    /// <summary><see cref="InverseCdfAtLeast"/> when a tie at the threshold was split: weight equal to the threshold
    /// counts only up to <paramref name="lastTieId"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static long InverseCdfScalar(float* weights, int v, float threshold, int lastTieId, double target)
    {
        double acc = 0;
        int last = -1;
        for (int i = 0; i < v; i++)
        {
            float w = weights[i];
            if (w < threshold || (w == threshold && i > lastTieId) || w <= 0) continue;
            acc += w;
            last = i;
            if (acc > target) return i;
        }
        return last >= 0 ? last : 0;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    private static double BlockSum(float* weights, int start, int end, Vector512<float> th, float threshold)
    {
        int i = start;
        var sum = Vector512<double>.Zero;
        for (; i <= end - 16; i += 16)
        {
            var w = Vector512.Load(weights + i);
            var kept = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(w, th), w, Vector512<float>.Zero);
            var (lower, upper) = Vector512.Widen(kept);
            sum += lower + upper;
        }
        double total = Vector512.Sum(sum);
        for (; i < end; i++)
            if (weights[i] >= threshold) total += weights[i];
        return total;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int LastAtLeast(float* weights, int start, int end, float threshold)
    {
        for (int i = end - 1; i >= start; i--)
            if (weights[i] >= threshold && weights[i] > 0) return i;
        return -1;
    }
}
