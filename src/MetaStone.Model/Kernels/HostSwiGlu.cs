using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using MetaStone.Model.Generation;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model.Kernels;

/// <summary>
/// The MLP's gate on the CPU: <c>silu(gate) · up</c> from the fused gate/up projection's fp32 output, in one pass.
/// </summary>
/// <remarks>
/// Why by hand: torch's SiLU (Sleef's exp) ran at two speeds from one process to the next on this machine. On the 0.5B
/// shape at k = 32 the step's 24 SiLUs over [32, 4864] took ~1.2 ms in some processes and ~41 ms in others (2026-12-03,
/// `decode-bench profile`, the same build alternated: element-wise 3.1–3.5 against 44–45 ms; best-of-32 ran at 245
/// instead of ~365 tok/s, and perf put Sleef's exp at a quarter of the step's thread). The cause was not found; this
/// kernel has no such mode, and saves the second pass of the separate multiply.
/// σ(g) is computed from e = exp(−|g|) ≤ 1 (1 / (1 + e) for g ≥ 0, e / (1 + e) below), so no exponential overflows.
/// </remarks>
internal static unsafe class HostSwiGlu
{
    /// <summary>True when <paramref name="gateUp"/> ([..., 2·ffn], fp32, contiguous, CPU) can be read in place.</summary>
    public static bool Supports(Tensor gateUp, long ffn) =>
        HostLinear.IsSupported && gateUp.device_type == DeviceType.CPU && gateUp.dtype == ScalarType.Float32 && gateUp.is_contiguous()
        && gateUp.shape[^1] == 2 * ffn;

    /// <summary>[..., 2·ffn] (gate, then up) → fresh [..., ffn] fp32.</summary>
    public static Tensor Forward(Tensor gateUp, int ffn)
    {
        if (!Supports(gateUp, ffn)) throw new ArgumentException($"expected a contiguous fp32 CPU tensor [..., {2 * ffn}], got {gateUp.dtype} [{string.Join(", ", gateUp.shape)}]", nameof(gateUp));
        var shape = gateUp.shape.ToArray();
        shape[^1] = ffn;
        var output = empty(shape, dtype: ScalarType.Float32, device: gateUp.device);
        long rows = gateUp.numel() / (2L * ffn);
        float* source = (float*)HostLinear.DataPointer(gateUp), target = (float*)HostLinear.DataPointer(output);
        for (long row = 0; row < rows; row++) Row(source + row * 2 * ffn, target + row * ffn, ffn);
        GC.KeepAlive(gateUp);
        return output;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Row(float* gate, float* output, int ffn)
    {
        float* up = gate + ffn;
        int i = 0;
        for (; i <= ffn - 16; i += 16)
        {
            var g = Vector512.Load(gate + i);
            var e = HostTokenSampler.ExpNonPositive(-Vector512.Abs(g));
            var sigmoid = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(g, Vector512<float>.Zero), Vector512<float>.One, e) / (Vector512<float>.One + e);
            (g * sigmoid * Vector512.Load(up + i)).Store(output + i);
        }
        for (; i < ffn; i++)
        {
            float g = gate[i], e = MathF.Exp(-MathF.Abs(g));
            output[i] = g * ((g >= 0 ? 1f : e) / (1f + e)) * up[i];
        }
    }
}
