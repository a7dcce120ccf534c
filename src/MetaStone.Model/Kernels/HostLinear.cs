using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model.Kernels;

/// <summary>
/// <c>y = x·Wᵀ + b</c> on the CPU for fp32 activations and bf16 or fp32 weights, returning fp32: products of the exact
/// weights with the unrounded activations, summed in fp32 (AVX-512).
/// </summary>
/// <remarks>
/// Hand-written because libtorch's CPU kernels leave most of this machine unused where decoding lives (measured with
/// the 0.5B shape's matrices, 2 threads, 2026-12-03, <c>tests/tools/decode-bench linear</c>):
/// fp32 weights at 1–32 rows ran at 10–59 GFLOP/s in torch (1.6–3.4× slower than this kernel at every row count; one
/// row read the weights at 16 GB/s where this reaches 40), and bf16 at one to four rows at 17–75 GFLOP/s (this kernel
/// 1.1–1.3× faster); at 128 rows fp32 2.9× faster, bf16 0.78×. From eight bf16 rows on, oneDNN's bf16 dot-product
/// instructions win (.NET exposes no AVX512-BF16 intrinsic), so <see cref="DecodeMaxRows"/> sends bf16 decode batches
/// of more than four rows back to torch.
/// It also fixes the bf16 path's numerics: torch has no bf16 × bf16 → fp32 matmul, so a bf16 matmul rounded its
/// inputs and its outputs to bf16, where this kernel rounds neither (llama.cpp rounds the inputs, not the outputs).
/// </remarks>
internal static unsafe class HostLinear
{
    /// <summary>AVX-512F (the only vector width written); elsewhere, or with <c>METASTONE_HOST_KERNELS=0</c> in the
    /// environment (an operator's switch back to torch for every matmul, e.g. to compare), every matmul stays in torch.</summary>
    public static bool IsSupported { get; } = Avx512F.IsSupported && Environment.GetEnvironmentVariable("METASTONE_HOST_KERNELS") != "0";

    /// <summary>Largest decode batch whose matmuls run here for a weight dtype (see the class remarks): every batch for
    /// fp32 weights, up to <see cref="Bf16DecodeMaxRows"/> for bf16, none for others. Prefill and full forwards run here
    /// at every row count (fp32 and bf16): for bf16 that costs ~1.3× oneDNN's time at 128 rows (measured 249 vs
    /// 320 GFLOP/s) once per prompt, and buys a prompt whose keys and values are computed from unrounded activations.</summary>
    public static long DecodeMaxRows(ScalarType weightDtype) => weightDtype switch
    {
        ScalarType.Float32 => long.MaxValue,
        // Larger bf16 batches run in the native AVX512-BF16 kernel when it is there (NativeBf16), else in torch.
        ScalarType.BFloat16 => NativeBf16.IsAvailable ? long.MaxValue : Bf16DecodeMaxRows,
        _ => 0,
    };

    /// <summary>bf16 decode batches: this kernel wins up to four rows (1.33× at one, 1.11× at four), oneDNN from eight.</summary>
    public const long Bf16DecodeMaxRows = 4;

    /// <summary>Whether this kernel can compute a matmul against <paramref name="weight"/> at all.</summary>
    public static bool Takes(Tensor weight) =>
        IsSupported && weight.dtype is ScalarType.Float32 or ScalarType.BFloat16 && weight.device_type == DeviceType.CPU
        && weight.shape[1] % 16 == 0 && weight.is_contiguous();

    /// <summary>x [..., K] fp32, weight [N, K] (bf16 or fp32, contiguous), bias [N] or null → fp32 [..., N].</summary>
    public static Tensor Forward(Tensor x, Tensor weight, Tensor? bias)
    {
        if (x.dtype != ScalarType.Float32) throw new ArgumentException("the host kernel takes fp32 activations", nameof(x));
        var (input, rows, k, n, outputShape) = Operands(x, weight);
        var output = empty(outputShape, dtype: ScalarType.Float32, device: x.device);
        if (rows == 0) return output;
        Tensor? biasFp32 = bias is null ? null : bias.dtype == ScalarType.Float32 ? bias : bias.to_type(ScalarType.Float32);
        bool bf16 = weight.dtype == ScalarType.BFloat16;
        if (!bf16 && weight.dtype != ScalarType.Float32) throw new ArgumentException($"the host kernel takes bf16 or fp32 weights, not {weight.dtype}", nameof(weight));
        var job = new LinearJob((void*)DataPointer(weight), bf16, (float*)DataPointer(input), (float*)DataPointer(output),
            biasFp32 is null ? null : (float*)DataPointer(biasFp32), (int)rows, k, n);
        KernelTeam.Shared.Run(ref job, HostKernelPass.Threads);
        GC.KeepAlive(input);
        GC.KeepAlive(weight);
        GC.KeepAlive(biasFp32);
        return output;
    }

    /// <summary>x as contiguous rows of the weight's width K, their count, N, and the output's shape [..., N] (shared
    /// with <see cref="NativeBf16"/>).</summary>
    internal static (Tensor Input, long Rows, int K, int N, long[] OutputShape) Operands(Tensor x, Tensor weight)
    {
        int k = (int)weight.shape[1], n = (int)weight.shape[0];
        if (x.shape[^1] != k) throw new ArgumentException($"activation width {x.shape[^1]} != weight width {k}", nameof(x));
        var input = x.is_contiguous() ? x : x.contiguous();
        var outputShape = x.shape.ToArray();
        outputShape[^1] = n;
        return (input, input.numel() / k, k, n, outputShape);
    }

    [DllImport("LibTorchSharp")]
    private static extern nint THSTensor_data(nint handle);

    /// <summary>The tensor's first element (storage offset included), as <c>Tensor.data_ptr()</c> in PyTorch; TorchSharp
    /// exposes only the storage's base pointer.</summary>
    internal static nint DataPointer(Tensor t) => THSTensor_data(t.Handle);
}

/// <summary>One matmul's operands, split by weight rows among the team's threads.</summary>
internal readonly unsafe struct LinearJob(void* weight, bool bf16, float* x, float* y, float* bias, int m, int k, int n) : ITeamJob
{
    public int ScratchFloats => LinearRows.ScratchFloats(k);

    public long MultiplyAdds => (long)m * n * k;

    public int PartsFor(int threads) => KernelTeam.IsSmallMatmul(MultiplyAdds) ? 1 : threads;

    /// <summary>Rows of W [start, end) for all M rows of x: every thread streams its own part of the weights once.</summary>
    public void RunPart(int part, int parts, float* scratch)
    {
        var (start, end) = WeightRowsOfPart(n, part, parts);
        if (start < end) LinearRows.Run(weight, bf16, x, y, bias, m, k, n, start, end, scratch);
    }

    /// <summary>Part <paramref name="part"/> of <paramref name="parts"/> of <paramref name="n"/> weight rows, in whole
    /// tiles of <paramref name="tileRows"/> (the managed kernels and the native row kernel take four weight rows at a
    /// time), so only the last part has a remainder.</summary>
    public static (int Start, int End) WeightRowsOfPart(int n, int part, int parts, int tileRows = 4)
    {
        int per = ((n + parts - 1) / parts + tileRows - 1) / tileRows * tileRows;
        return (Math.Min(n, part * per), Math.Min(n, (part + 1) * per));
    }
}

/// <summary>How the weight vectors are read: bf16 widened to fp32, or fp32 as is. A type parameter (a struct), so each
/// kernel is compiled once per weight type with no dtype branch inside its loops.</summary>
internal unsafe interface IWeightLoader
{
    static abstract Vector512<float> Load(void* w, long offset);

    /// <summary>Asks for the cache line holding element <paramref name="offset"/> (no fault if it is past the end).</summary>
    static abstract void Prefetch(void* w, long offset);
}

internal readonly unsafe struct Bf16Weights : IWeightLoader
{
    /// <summary>16 bf16 values → fp32 (exact: bf16 is the high half of an fp32).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load(void* w, long offset) =>
        Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(Vector256.Load((ushort*)w + offset)), 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Prefetch(void* w, long offset) => Sse.Prefetch0((ushort*)w + offset);
}

internal readonly unsafe struct Fp32Weights : IWeightLoader
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load(void* w, long offset) => Vector512.Load((float*)w + offset);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Prefetch(void* w, long offset)
    {
        // Nothing: an fp32 row consumes a whole cache line per 16 columns and the hardware prefetcher keeps up; explicit
        // prefetches measured no different (decode forward, k = 1 and 2, alternating builds, within the run-to-run noise).
    }
}

/// <summary>The arithmetic: 4 weight rows at a time against 1, 2 or 4 activation rows, 16 lanes of fp32 FMA.</summary>
/// <remarks>The loop methods are compiled fully optimised on first call (AggressiveOptimization): under tiered
/// compilation the load's warm-up forward ran them as tier-0 code over all the weights (load 3.1–4.3 s → 6.5–6.8 s on
/// the 0.5B shape). With the dtype still a runtime flag inside the loops that cost ~10 % of the decode forward against
/// tier-1 code (48.8 vs 43.8 ms); as a type parameter it does not (see docs/model-engine.md).</remarks>
internal static unsafe class LinearRows
{
    /// <summary>Floats of scratch a thread needs: four fp32 weight rows of the widest K (bf16 rows converted once per
    /// block, then reused by every group of four activation rows).</summary>
    public static int ScratchFloats(int k) => 4 * k;

    /// <summary>How many blocks of four fp32 weight rows ahead the first tile of activation rows prefetches. At 32 rows
    /// these matmuls are bound by the latency of weights streamed from memory, not by the multiply-adds: the tiny bench
    /// shape's matrices (K = 256, 2026-12-03, weights cycled through 64 MB so none stays cached) ran at 95–162 GFLOP/s,
    /// against 236–296 when cached. Prefetching two blocks ahead: 112–265; one or four ahead gained less.</summary>
    private const int FetchAheadBlocks = 2;

    public static void Run(void* w, bool bf16, float* x, float* y, float* bias, int m, int k, int n, int start, int end, float* scratch)
    {
        if (bf16) Run<Bf16Weights>(w, x, y, bias, m, k, n, start, end, scratch);
        else Run<Fp32Weights>(w, x, y, bias, m, k, n, start, end, scratch);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Run<TWeights>(void* w, float* x, float* y, float* bias, int m, int k, int n, int start, int end, float* scratch)
        where TWeights : struct, IWeightLoader
    {
        int r = start;
        if (m <= 2)
        {
            // Memory-bound: convert each weight vector in registers as it streams past.
            for (; r + 4 <= end; r += 4)
            {
                if (m == 1) OneRowTimesFour<TWeights>(w, r, x, y, bias, k, r);
                else TwoRowsTimesFour<TWeights>(w, x, y, bias, k, n, r);
            }
            for (; r < end; r++) RowsTimesOne<TWeights>(w, x, y, bias, m, k, n, r);
            return;
        }
        for (; r + 4 <= end; r += 4)
        {
            float* w0;
            if (typeof(TWeights) == typeof(Bf16Weights))
            {
                void* source = (ushort*)w + (long)r * k;
                // The next block's lines are requested while this one is widened (see PrefetchNextBlock).
                for (int i = 0; i < 4 * k; i += 16)
                {
                    TWeights.Prefetch(source, 4L * k + i);
                    Vector512.Store(TWeights.Load(source, i), scratch + i);
                }
                w0 = scratch;
            }
            else w0 = (float*)w + (long)r * k;
            // fp32 weights: the first tile of activation rows fetches the block FetchAheadBlocks ahead into L1.
            float* ahead = typeof(TWeights) == typeof(Fp32Weights) && r + 4 * (FetchAheadBlocks + 1) <= end ? (float*)w + (long)(r + 4 * FetchAheadBlocks) * k : null;
            int row = 0;
            for (; row + 4 <= m; row += 4, ahead = null) FourRowsTimesFour(w0, x + (long)row * k, y + (long)row * n, bias, k, n, r, ahead);
            for (; row < m; row++) OneRowTimesFour<Fp32Weights>(w0, 0, x + (long)row * k, y + (long)row * n, bias, k, r);
        }
        for (; r < end; r++) RowsTimesOne<TWeights>(w, x, y, bias, m, k, n, r);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(float* y, float* bias, int r, Vector512<float> a0, Vector512<float> a1, Vector512<float> a2, Vector512<float> a3)
    {
        var sums = VectorSums.Sum4(a0, a1, a2, a3);
        if (bias is not null) sums += Vector128.Load(bias + r);
        sums.Store(y + r);
    }

    /// <summary>
    /// Prefetches column <c>c</c> of the four weight rows after the current block (<paramref name="offset"/> is row 0's):
    /// one and two activation rows are bound by reading the weights, and the hardware prefetcher alone kept too few lines
    /// in flight for bf16 rows (half a line per 16 columns). Measured on the 0.5B head (151,936 × 896 bf16, one row,
    /// alternating in one process): 24.4 → 31.2 GB/s on one thread, 49.7 → 69.5 GB/s on two; prefetching two or four
    /// blocks ahead, or unrolling instead, gained less. The whole bf16 decode forward, k = 1: 30.8–34.0 → 24.0–26.3 ms.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchNextBlock<TWeights>(void* w, long offset, int k) where TWeights : struct, IWeightLoader
    {
        TWeights.Prefetch(w, offset);
        TWeights.Prefetch(w, offset + k);
        TWeights.Prefetch(w, offset + 2L * k);
        TWeights.Prefetch(w, offset + 3L * k);
    }

    /// <summary>One activation row against weight rows [wRow, wRow + 4) of <paramref name="w"/> (row stride k), into
    /// outputs [r, r + 4).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void OneRowTimesFour<TWeights>(void* w, long wRow, float* x, float* y, float* bias, int k, int r)
        where TWeights : struct, IWeightLoader
    {
        long o0 = wRow * k, o1 = o0 + k, o2 = o1 + k, o3 = o2 + k, next = 4L * k;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (int c = 0; c < k; c += 16)
        {
            PrefetchNextBlock<TWeights>(w, o0 + next + c, k);
            var u = Vector512.Load(x + c);
            a0 = Avx512F.FusedMultiplyAdd(u, TWeights.Load(w, o0 + c), a0);
            a1 = Avx512F.FusedMultiplyAdd(u, TWeights.Load(w, o1 + c), a1);
            a2 = Avx512F.FusedMultiplyAdd(u, TWeights.Load(w, o2 + c), a2);
            a3 = Avx512F.FusedMultiplyAdd(u, TWeights.Load(w, o3 + c), a3);
        }
        Store(y, bias, r, a0, a1, a2, a3);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TwoRowsTimesFour<TWeights>(void* w, float* x, float* y, float* bias, int k, int n, int r)
        where TWeights : struct, IWeightLoader
    {
        long o0 = (long)r * k, o1 = o0 + k, o2 = o1 + k, o3 = o2 + k, next = 4L * k;
        float* x1 = x + k;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
        for (int c = 0; c < k; c += 16)
        {
            PrefetchNextBlock<TWeights>(w, o0 + next + c, k);
            var u = Vector512.Load(x + c);
            var t = Vector512.Load(x1 + c);
            var v0 = TWeights.Load(w, o0 + c);
            var v1 = TWeights.Load(w, o1 + c);
            var v2 = TWeights.Load(w, o2 + c);
            var v3 = TWeights.Load(w, o3 + c);
            a0 = Avx512F.FusedMultiplyAdd(u, v0, a0); a1 = Avx512F.FusedMultiplyAdd(u, v1, a1);
            a2 = Avx512F.FusedMultiplyAdd(u, v2, a2); a3 = Avx512F.FusedMultiplyAdd(u, v3, a3);
            b0 = Avx512F.FusedMultiplyAdd(t, v0, b0); b1 = Avx512F.FusedMultiplyAdd(t, v1, b1);
            b2 = Avx512F.FusedMultiplyAdd(t, v2, b2); b3 = Avx512F.FusedMultiplyAdd(t, v3, b3);
        }
        Store(y, bias, r, a0, a1, a2, a3);
        Store(y + n, bias, r, b0, b1, b2, b3);
    }

    /// <summary>Four fp32 weight rows (contiguous at <paramref name="w0"/>) against four activation rows: 16 accumulators,
    /// eight loads per 16 FMAs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void FourRowsTimesFour(float* w0, float* x0, float* y, float* bias, int k, int n, int r, float* ahead)
    {
        float* w1 = w0 + k, w2 = w1 + k, w3 = w2 + k;
        float* x1 = x0 + k, x2 = x1 + k, x3 = x2 + k;
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default, a10 = default, a11 = default, a12 = default, a13 = default,
            a20 = default, a21 = default, a22 = default, a23 = default, a30 = default, a31 = default, a32 = default, a33 = default;
        for (int c = 0; c < k; c += 16)
        {
            if (ahead != null)
            {
                Sse.Prefetch0(ahead + c);
                Sse.Prefetch0(ahead + k + c);
                Sse.Prefetch0(ahead + 2L * k + c);
                Sse.Prefetch0(ahead + 3L * k + c);
            }
            var v0 = Vector512.Load(w0 + c); var v1 = Vector512.Load(w1 + c); var v2 = Vector512.Load(w2 + c); var v3 = Vector512.Load(w3 + c);
            var u = Vector512.Load(x0 + c);
            a00 = Avx512F.FusedMultiplyAdd(u, v0, a00); a01 = Avx512F.FusedMultiplyAdd(u, v1, a01); a02 = Avx512F.FusedMultiplyAdd(u, v2, a02); a03 = Avx512F.FusedMultiplyAdd(u, v3, a03);
            u = Vector512.Load(x1 + c);
            a10 = Avx512F.FusedMultiplyAdd(u, v0, a10); a11 = Avx512F.FusedMultiplyAdd(u, v1, a11); a12 = Avx512F.FusedMultiplyAdd(u, v2, a12); a13 = Avx512F.FusedMultiplyAdd(u, v3, a13);
            u = Vector512.Load(x2 + c);
            a20 = Avx512F.FusedMultiplyAdd(u, v0, a20); a21 = Avx512F.FusedMultiplyAdd(u, v1, a21); a22 = Avx512F.FusedMultiplyAdd(u, v2, a22); a23 = Avx512F.FusedMultiplyAdd(u, v3, a23);
            u = Vector512.Load(x3 + c);
            a30 = Avx512F.FusedMultiplyAdd(u, v0, a30); a31 = Avx512F.FusedMultiplyAdd(u, v1, a31); a32 = Avx512F.FusedMultiplyAdd(u, v2, a32); a33 = Avx512F.FusedMultiplyAdd(u, v3, a33);
        }
        Store(y, bias, r, a00, a01, a02, a03);
        Store(y + n, bias, r, a10, a11, a12, a13);
        Store(y + 2L * n, bias, r, a20, a21, a22, a23);
        Store(y + 3L * n, bias, r, a30, a31, a32, a33);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowsTimesOne<TWeights>(void* w, float* x, float* y, float* bias, int m, int k, int n, int r)
        where TWeights : struct, IWeightLoader
    {
        long o = (long)r * k;
        for (int row = 0; row < m; row++)
        {
            Vector512<float> a = default;
            float* xr = x + (long)row * k;
            for (int c = 0; c < k; c += 16) a = Avx512F.FusedMultiplyAdd(Vector512.Load(xr + c), TWeights.Load(w, o + c), a);
            y[(long)row * n + r] = VectorSums.Sum(a) + (bias is null ? 0f : bias[r]);
        }
    }
}
