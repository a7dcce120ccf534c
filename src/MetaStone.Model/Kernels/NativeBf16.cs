using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model.Kernels;

/// <summary>
/// bf16 matmuls of batched decode steps in <c>libmetastone_bf16.so</c> (<c>src/MetaStone.Model/Native</c>): AVX512-BF16
/// dot products (<c>vdpbf16ps</c>), which .NET 10 has no intrinsic for, on bf16-rounded activations (as llama.cpp rounds
/// them), fp32 outputs, the weight rows split over the kernel team.
/// </summary>
/// <remarks>
/// Why: a best-of-32 step's matmuls ran at ~325 GFLOP/s in oneDNN through torch (layers 68–71 ms + head 27–30 ms on the
/// 0.5B shape) where the instruction peaks at ~780 GFLOP/s on this 2-core machine (tests/tools/bf16-gemm-probe). Used for
/// decode batches above <see cref="HostLinear.Bf16DecodeMaxRows"/> rows, where <see cref="HostLinear"/>'s fp32 FMA on
/// widened weights loses to oneDNN; below that, and for prefill, the exact managed kernel stays. Off without the library
/// next to the assembly, on CPUs without avx512_bf16, or with <c>METASTONE_NATIVE_BF16=0</c>; torch then runs these
/// matmuls as before.
/// </remarks>
internal static unsafe class NativeBf16
{
    public const string LibraryFile = "libmetastone_bf16.so";

    private static readonly delegate* unmanaged<float*, ushort*, long, void> s_toBf16;
    // Both matmuls take (activations, weights, bias, y, rows, n, k, n0, n1); the activations are bf16 rows or packed pairs.
    private static readonly delegate* unmanaged<void*, ushort*, float*, float*, int, int, int, int, int, void> s_matmulRows;
    private static readonly delegate* unmanaged<float*, uint*, int, int, void> s_packActivations;
    private static readonly delegate* unmanaged<void*, ushort*, float*, float*, int, int, int, int, int, void> s_matmulPacked;

    /// <summary>From this many rows a matmul packs its activations and runs the activation-packed kernel
    /// (<c>metastone_bf16_matmul_packed</c>): measured on the 0.5B shape's matmuls (tests/tools/bf16-gemm-probe), it
    /// takes ~17 % less time than the row kernel at 32 rows, the same at 24, and more at 16 and fewer, where half of
    /// its 16-row vectors can be padding.</summary>
    public const int ActivationPackedMinRows = 24;

    /// <summary>Weight rows per tile of the activation-packed kernel: a thread's share is cut in whole tiles.</summary>
    private const int PackedTileRows = 12;

    /// <summary>Why the library is not used, or null when it is.</summary>
    public static string? Unavailable { get; }

    public static bool IsAvailable => Unavailable is null;

    static NativeBf16()
    {
        Unavailable = Load(out nint toBf16, out nint matmulRows, out nint packActivations, out nint matmulPacked);
        s_toBf16 = (delegate* unmanaged<float*, ushort*, long, void>)toBf16;
        s_matmulRows = (delegate* unmanaged<void*, ushort*, float*, float*, int, int, int, int, int, void>)matmulRows;
        s_packActivations = (delegate* unmanaged<float*, uint*, int, int, void>)packActivations;
        s_matmulPacked = (delegate* unmanaged<void*, ushort*, float*, float*, int, int, int, int, int, void>)matmulPacked;
    }

    private static string? Load(out nint toBf16, out nint matmulRows, out nint packActivations, out nint matmulPacked)
    {
        toBf16 = matmulRows = packActivations = matmulPacked = 0;
        if (Environment.GetEnvironmentVariable("METASTONE_NATIVE_BF16") == "0") return "METASTONE_NATIVE_BF16=0";
        if (!HostLinear.IsSupported) return "no AVX-512 host kernels";
        if (!CpuFeatures.All.Contains("avx512_bf16")) return "the CPU lacks avx512_bf16";
        if (!RuntimeInformation.IsOSPlatform(OSPlatform.Linux) || RuntimeInformation.ProcessArchitecture != Architecture.X64) return "built for linux-x64 only";
        string path = Path.Combine(AppContext.BaseDirectory, LibraryFile);
        if (!NativeLibrary.TryLoad(path, out nint handle)) return $"{path} not found or not loadable";
        if (!NativeLibrary.TryGetExport(handle, "metastone_fp32_to_bf16", out toBf16)
            || !NativeLibrary.TryGetExport(handle, "metastone_bf16_matmul_rows", out matmulRows)
            || !NativeLibrary.TryGetExport(handle, "metastone_bf16_pack_activations", out packActivations)
            || !NativeLibrary.TryGetExport(handle, "metastone_bf16_matmul_packed", out matmulPacked))
            return $"{path} lacks its exports";
        return null;
    }

    /// <summary>x [..., K] fp32, weight [N, K] bf16 (contiguous), bias [N] or null → fp32 [..., N], written into
    /// <paramref name="into"/> when it is an fp32 tensor of the output's shape (the engine's logits buffer).</summary>
    public static Tensor Forward(Tensor x, Tensor weight, Tensor? bias, Tensor? into = null)
    {
        if (!IsAvailable) throw new InvalidOperationException($"the native bf16 kernel is not available: {Unavailable}");
        if (x.dtype != ScalarType.Float32 || weight.dtype != ScalarType.BFloat16 || !weight.is_contiguous())
            throw new ArgumentException($"the native kernel takes fp32 activations and contiguous bf16 weights, got {x.dtype} and {weight.dtype}");
        var (input, rows, k, n, outputShape) = HostLinear.Operands(x, weight);
        var output = into is not null && into.dtype == ScalarType.Float32 && into.is_contiguous() && into.shape.SequenceEqual(outputShape)
            ? into
            : empty(outputShape, dtype: ScalarType.Float32, device: x.device);
        if (rows == 0) return output;
        Tensor? biasFp32 = bias is null ? null : bias.dtype == ScalarType.Float32 ? bias : bias.to_type(ScalarType.Float32);
        int m = checked((int)rows);
        float* biasData = biasFp32 is null ? null : (float*)HostLinear.DataPointer(biasFp32);
        if (m >= ActivationPackedMinRows && k % 16 == 0)   // the packing takes 16 columns at a time
        {
            // Pairs along K × rows padded to 16, as 32-bit elements (see metastone_bf16.c).
            using var packed = empty([k / 2 * (long)((m + 15) / 16 * 16)], dtype: ScalarType.Int32, device: x.device);
            var packedData = (uint*)HostLinear.DataPointer(packed);
            s_packActivations((float*)HostLinear.DataPointer(input), packedData, m, k);
            var job = new MatmulJob(packedData, (ushort*)HostLinear.DataPointer(weight), biasData,
                (float*)HostLinear.DataPointer(output), m, n, k, s_matmulPacked, PackedTileRows);
            KernelTeam.Shared.Run(ref job, HostKernelPass.Threads);
        }
        else
        {
            using var rounded = empty([rows, k], dtype: ScalarType.BFloat16, device: x.device);
            s_toBf16((float*)HostLinear.DataPointer(input), (ushort*)HostLinear.DataPointer(rounded), rows * k);
            var job = new MatmulJob((void*)HostLinear.DataPointer(rounded), (ushort*)HostLinear.DataPointer(weight), biasData,
                (float*)HostLinear.DataPointer(output), m, n, k, s_matmulRows, 4);
            KernelTeam.Shared.Run(ref job, HostKernelPass.Threads);
        }
        GC.KeepAlive(input);
        GC.KeepAlive(weight);
        GC.KeepAlive(biasFp32);
        return output;
    }

    /// <param name="activations">bf16 rows (the row kernel) or packed pairs (the activation-packed kernel).</param>
    /// <param name="tileRows">The kernel's weight rows per tile: each thread's share is a whole number of them.</param>
    private readonly struct MatmulJob(void* activations, ushort* w, float* bias, float* y, int rows, int n, int k,
        delegate* unmanaged<void*, ushort*, float*, float*, int, int, int, int, int, void> matmul, int tileRows) : ITeamJob
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
