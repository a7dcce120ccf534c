using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model.Kernels;

/// <summary>
/// RMSNorm on the CPU, <c>x · rsqrt(mean(x²) + eps) · weight</c>, fp32 throughout (as Hugging Face keeps it in bf16
/// models), one pass per row over memory read in place, into one fresh tensor.
/// </summary>
/// <remarks>
/// Why by hand: in torch the norm is six ops (square, mean, add, rsqrt, two multiplies; seven with a bf16 weight's
/// widening), each a tensor handle to create and dispose; a 0.5B decode step runs 49 norms, ~300 of its ~580 handles,
/// for ~64 k values of arithmetic. The sum of squares runs over 16 lanes and is then added up, a different order from
/// torch's reduction (the results agree to fp32 rounding).
/// </remarks>
internal static unsafe class HostRmsNorm
{
    /// <summary>x [..., H] fp32 contiguous on the CPU and a weight [H] of fp32 or bf16 (contiguous, CPU).</summary>
    public static bool Supports(Tensor x, Tensor weight) =>
        HostLinear.IsSupported && x.device_type == DeviceType.CPU && x.dtype == ScalarType.Float32 && x.is_contiguous()
        && weight.device_type == DeviceType.CPU && weight.dim() == 1 && weight.is_contiguous()
        && weight.dtype is ScalarType.Float32 or ScalarType.BFloat16 && x.shape[^1] == weight.shape[0];

    public static Tensor Forward(Tensor x, Tensor weight, float eps)
    {
        if (!Supports(x, weight))
            throw new ArgumentException($"expected fp32 CPU activations [..., {weight.shape[0]}] and an fp32 or bf16 weight, got {x.dtype} [{string.Join(", ", x.shape)}]", nameof(x));
        int h = checked((int)weight.shape[0]);
        var output = empty(x.shape, dtype: ScalarType.Float32, device: x.device);
        long rows = h == 0 ? 0 : x.numel() / h;
        float* source = (float*)HostLinear.DataPointer(x), target = (float*)HostLinear.DataPointer(output);
        void* w = (void*)HostLinear.DataPointer(weight);
        bool bf16 = weight.dtype == ScalarType.BFloat16;
        for (long row = 0; row < rows; row++)
        {
            if (bf16) Row<Bf16Weights>(source + row * h, w, target + row * h, h, eps);
            else Row<Fp32Weights>(source + row * h, w, target + row * h, h, eps);
        }
        GC.KeepAlive(x);
        GC.KeepAlive(weight);
        return output;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Row<TWeights>(float* x, void* weight, float* y, int h, float eps) where TWeights : IWeightLoader
    {
        int i = 0;
        var squares = Vector512<float>.Zero;
        for (; i <= h - 16; i += 16)
        {
            var v = Vector512.Load(x + i);
            squares = Vector512.FusedMultiplyAdd(v, v, squares);
        }
        float sum = Vector512.Sum(squares);
        for (; i < h; i++) sum += x[i] * x[i];
        float scale = 1f / MathF.Sqrt(sum / h + eps);
        var s = Vector512.Create(scale);
        i = 0;
        for (; i <= h - 16; i += 16) (Vector512.Load(x + i) * s * TWeights.Load(weight, i)).Store(y + i);
        for (; i < h; i++)
        {
            float w = typeof(TWeights) == typeof(Bf16Weights)
                ? BitConverter.Int32BitsToSingle(((ushort*)weight)[i] << 16)
                : ((float*)weight)[i];
            y[i] = x[i] * scale * w;
        }
    }
}
