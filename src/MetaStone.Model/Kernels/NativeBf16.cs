using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model.Kernels;

/// <summary>
/// The matmuls of batched decode steps in <c>libmetastone_bf16.so</c> (<c>src/MetaStone.Model/Native</c>): for bf16
/// weights AVX512-BF16 dot products (<c>vdpbf16ps</c>), which .NET 10 has no intrinsic for, on bf16-rounded activations
/// (as llama.cpp rounds them); from <see cref="ActivationPackedMinRows"/> rows, for fp32 weights and for bf16 prefill,
/// fp32 FMAs of each exact weight broadcast against 16 transposed, unrounded activation rows. fp32 outputs, the weight
/// rows split over the kernel team.
/// </summary>
/// <remarks>
/// Why: a best-of-32 step's matmuls ran at ~325 GFLOP/s in oneDNN through torch (layers 68–71 ms + head 27–30 ms on the
/// 0.5B shape) where the instruction peaks at ~780 GFLOP/s on this 2-core machine (tests/tools/bf16-gemm-probe). Used for
/// bf16 decode batches above <see cref="HostLinear.Bf16DecodeMaxRows"/> rows, where <see cref="HostLinear"/>'s fp32 FMA on
/// widened weights loses to oneDNN; below that, and for prefill, the exact managed kernel stays. Off without the library
/// next to the assembly, on CPUs without avx512_bf16, or with <c>METASTONE_NATIVE_BF16=0</c>; torch then runs the bf16
/// matmuls as before, and <see cref="HostLinear"/> the fp32 ones.
/// </remarks>
internal static unsafe class NativeBf16
{
    public const string LibraryFile = "libmetastone_bf16.so";

    private static readonly delegate* unmanaged<float*, ushort*, long, void> s_toBf16;
    private static readonly delegate* unmanaged<float*, void*, int, int, void> s_packBf16, s_packFp32;
    // Every matmul takes (activations, weights, bias, y, rows, n, k, n0, n1); the activations are bf16 rows, packed bf16
    // pairs or transposed fp32, the weights bf16 or fp32.
    private static readonly delegate* unmanaged<void*, void*, float*, float*, int, int, int, int, int, void> s_matmulRows, s_matmulPacked, s_matmulFp32, s_matmulExact;

    /// <summary>From this many rows a bf16 matmul packs its activations and runs the activation-packed kernel
    /// (<c>metastone_bf16_matmul_packed</c>), and exact passes (fp32 weights, bf16 prefill) the transposed-activation
    /// kernels (<c>metastone_fp32_matmul_packed</c>, <c>metastone_bf16_matmul_exact</c>: ~340 and ~420 GFLOP/s at 32
    /// rows on the 0.5B shape's matmuls, where fp32 FMAs peak at ~460 on two cores). Measured
    /// on the 0.5B shape's matmuls (tests/tools/bf16-gemm-probe), the bf16 one takes ~17 % less time than the row kernel
    /// at 32 rows, the same at 24, and more at 16 and fewer, where half of its 16-row vectors can be padding.</summary>
    public const int ActivationPackedMinRows = 24;

    /// <summary>Activation rows packed and multiplied at a time (a multiple of the kernels' 32-row blocks).</summary>
    private const int PackedChunkRows = 256;

    /// <summary>Weight rows per tile of the activation-packed kernels: a thread's share is cut in whole tiles.</summary>
    private const int PackedTileRows = 12;

    /// <summary>Why the library is not used, or null when it is.</summary>
    public static string? Unavailable { get; }

    public static bool IsAvailable => Unavailable is null;

    static NativeBf16()
    {
        var exports = new nint[7];
        Unavailable = Load(exports);
        s_toBf16 = (delegate* unmanaged<float*, ushort*, long, void>)exports[0];
        s_matmulRows = (delegate* unmanaged<void*, void*, float*, float*, int, int, int, int, int, void>)exports[1];
        s_packBf16 = (delegate* unmanaged<float*, void*, int, int, void>)exports[2];
        s_matmulPacked = (delegate* unmanaged<void*, void*, float*, float*, int, int, int, int, int, void>)exports[3];
        s_packFp32 = (delegate* unmanaged<float*, void*, int, int, void>)exports[4];
        s_matmulFp32 = (delegate* unmanaged<void*, void*, float*, float*, int, int, int, int, int, void>)exports[5];
        s_matmulExact = (delegate* unmanaged<void*, void*, float*, float*, int, int, int, int, int, void>)exports[6];
    }

    private static readonly string[] s_exportNames =
    [
        "metastone_fp32_to_bf16", "metastone_bf16_matmul_rows", "metastone_bf16_pack_activations",
        "metastone_bf16_matmul_packed", "metastone_fp32_pack_activations", "metastone_fp32_matmul_packed",
        "metastone_bf16_matmul_exact",
    ];

    private static string? Load(nint[] exports)
    {
        if (Environment.GetEnvironmentVariable("METASTONE_NATIVE_BF16") == "0") return "METASTONE_NATIVE_BF16=0";
        if (!HostLinear.IsSupported) return "no AVX-512 host kernels";
        if (!CpuFeatures.All.Contains("avx512_bf16")) return "the CPU lacks avx512_bf16";
        if (!RuntimeInformation.IsOSPlatform(OSPlatform.Linux) || RuntimeInformation.ProcessArchitecture != Architecture.X64) return "built for linux-x64 only";
        string path = Path.Combine(AppContext.BaseDirectory, LibraryFile);
        if (!NativeLibrary.TryLoad(path, out nint handle)) return $"{path} not found or not loadable";
        for (int i = 0; i < exports.Length; i++)
            if (!NativeLibrary.TryGetExport(handle, s_exportNames[i], out exports[i]))
                return $"{path} lacks the export {s_exportNames[i]}";
        return null;
    }

    /// <summary>x [..., K] fp32, weight [N, K] bf16 or fp32 (contiguous), bias [N] or null → fp32 [..., N], written into
    /// <paramref name="into"/> when it is an fp32 tensor of the output's shape (the engine's logits buffer). bf16 weights
    /// multiply the activations rounded to bf16 (the decode batches' dot-product kernels); fp32 weights need K a multiple
    /// of 16 and run as <see cref="ForwardExact"/>.</summary>
    public static Tensor Forward(Tensor x, Tensor weight, Tensor? bias, Tensor? into = null) => Run(x, weight, bias, into, exact: false);

    /// <summary>As <see cref="Forward"/>, but products of the exact weights (bf16 widened, or fp32) with the unrounded
    /// activations, summed in fp32 — <see cref="HostLinear"/>'s numbers in another summation order, for passes with at
    /// least <see cref="ActivationPackedMinRows"/> rows (prefill, and fp32 decode batches). K a multiple of 16.</summary>
    public static Tensor ForwardExact(Tensor x, Tensor weight, Tensor? bias, Tensor? into = null) => Run(x, weight, bias, into, exact: true);

    private static Tensor Run(Tensor x, Tensor weight, Tensor? bias, Tensor? into, bool exact)
    {
        if (!IsAvailable) throw new InvalidOperationException($"the native bf16 kernel is not available: {Unavailable}");
        bool fp32 = weight.dtype == ScalarType.Float32;
        exact |= fp32;
        if (x.dtype != ScalarType.Float32 || !(fp32 || weight.dtype == ScalarType.BFloat16) || !weight.is_contiguous())
            throw new ArgumentException($"the native kernels take fp32 activations and contiguous bf16 or fp32 weights, got {x.dtype} and {weight.dtype}");
        var (input, rows, k, n, outputShape) = HostLinear.Operands(x, weight);
        if (exact && k % 16 != 0) throw new ArgumentException($"the native exact kernels take widths that are multiples of 16, not {k}", nameof(weight));
        var output = into is not null && into.dtype == ScalarType.Float32 && into.is_contiguous() && into.shape.SequenceEqual(outputShape)
            ? into
            : empty(outputShape, dtype: ScalarType.Float32, device: x.device);
        if (rows == 0) return output;
        Tensor? biasFp32 = bias is null ? null : bias.dtype == ScalarType.Float32 ? bias : bias.to_type(ScalarType.Float32);
        int m = checked((int)rows);
        var inputData = (float*)HostLinear.DataPointer(input);
        void* weightData = (void*)HostLinear.DataPointer(weight);
        var biasData = biasFp32 is null ? null : (float*)HostLinear.DataPointer(biasFp32);
        var outputData = (float*)HostLinear.DataPointer(output);
        bool packs = exact || (m >= ActivationPackedMinRows && k % 16 == 0);   // the packing takes 16 columns at a time
        if (packs)
        {
            // Rows in chunks, so that a long prompt's prefill packs into a bounded buffer (K × 256 rows: 5 MB at the
            // 0.5B shape's widest K) instead of one the size of its activations, kept by the thread.
            var matmul = exact ? (fp32 ? s_matmulFp32 : s_matmulExact) : s_matmulPacked;
            for (int start = 0; start < m; start += PackedChunkRows)
            {
                int count = Math.Min(PackedChunkRows, m - start);
                long paddedRows = (count + 15) / 16 * 16;
                // fp32 columns (exact) or bf16 pairs along K (as 32-bit elements) × rows padded to 16 (metastone_bf16.c).
                void* packed = ActivationScratch(exact ? k * paddedRows * sizeof(float) : k / 2 * paddedRows * sizeof(uint));
                if (exact) s_packFp32(inputData + (long)start * k, packed, count, k);
                else s_packBf16(inputData + (long)start * k, packed, count, k);
                var job = new MatmulJob(packed, weightData, biasData, outputData + (long)start * n, count, n, k, matmul, PackedTileRows);
                KernelTeam.Shared.Run(ref job, HostKernelPass.Threads);
            }
        }
        else
        {
            var rounded = (ushort*)ActivationScratch(rows * k * sizeof(ushort));
            s_toBf16(inputData, rounded, rows * k);
            var job = new MatmulJob(rounded, weightData, biasData, outputData, m, n, k, s_matmulRows, 4);
            KernelTeam.Shared.Run(ref job, HostKernelPass.Threads);
        }
        GC.KeepAlive(input);
        GC.KeepAlive(weight);
        GC.KeepAlive(biasFp32);
        return output;
    }

    [ThreadStatic] private static ActivationBuffer? t_activations;

    /// <summary>The calling thread's buffer for a matmul's converted activations, grown to <paramref name="bytes"/>: the
    /// team reads it only inside the call. Native memory rather than a torch tensor per matmul: a best-of-32 step made
    /// ~100 of them, each a handle to create and dispose (the tiny shape's step: 104 tensors before the fp32 kernel, 121
    /// with a tensor per call).</summary>
    private static void* ActivationScratch(long bytes) => (t_activations ??= new ActivationBuffer()).Ensure(bytes);

    /// <summary>Native memory owned by one thread, freed when the thread's buffer is collected.</summary>
    private sealed class ActivationBuffer
    {
        private void* _data;
        private long _bytes;

        public void* Ensure(long bytes)
        {
            if (bytes <= _bytes) return _data;
            long size = Math.Max(bytes, 2 * _bytes);
            NativeMemory.AlignedFree(_data);
            _data = null;
            _bytes = 0;
            _data = NativeMemory.AlignedAlloc((nuint)size, 64);
            _bytes = size;
            return _data;
        }

        ~ActivationBuffer() => NativeMemory.AlignedFree(_data);
    }

    /// <param name="tileRows">The kernel's weight rows per tile: each thread's share is a whole number of them.</param>
    private readonly struct MatmulJob(void* activations, void* w, float* bias, float* y, int rows, int n, int k,
        delegate* unmanaged<void*, void*, float*, float*, int, int, int, int, int, void> matmul, int tileRows) : ITeamJob
    {
        public int PartsFor(int threads) => KernelTeam.IsSmallMatmul((long)rows * n * k) ? 1 : threads;

        public int ScratchFloats => 0;

        public void RunPart(int part, int parts, float* scratch)
        {
            var (start, end) = LinearJob.WeightRowsOfPart(n, part, parts, tileRows);
            if (start < end) matmul(activations, w, bias, y, rows, n, k, start, end);
        }
    }
}
