using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace MetaStone.Model.Kernels;

/// <summary>The SPRM head's two layers for a few feature rows, on the host (see <see cref="SprmHead.LogitsOfRows"/>).</summary>
internal static unsafe class SprmHostHead
{
    /// <summary>logits[i] = b2 + Σ_j w2[j]·relu(b1[j] + w1[j]·features[rows[i]]), for w1 [2c, c], b1 [2c], w2 [2c].</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Logits(float* features, long[] rows, int c, float* w1, float* b1, float* w2, float b2, float[] logits)
    {
        int hidden = 2 * c;
        for (int i = 0; i < rows.Length; i++)
        {
            float* f = features + rows[i] * c;
            var total = Vector128<float>.Zero;
            for (int j = 0; j < hidden; j += 4)   // hidden = 2c, a multiple of 32
            {
                float* r0 = w1 + (long)j * c, r1 = r0 + c, r2 = r1 + c, r3 = r2 + c;
                Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
                for (int k = 0; k < c; k += 16)
                {
                    var x = Vector512.Load(f + k);
                    a0 = Vector512.FusedMultiplyAdd(x, Vector512.Load(r0 + k), a0);
                    a1 = Vector512.FusedMultiplyAdd(x, Vector512.Load(r1 + k), a1);
                    a2 = Vector512.FusedMultiplyAdd(x, Vector512.Load(r2 + k), a2);
                    a3 = Vector512.FusedMultiplyAdd(x, Vector512.Load(r3 + k), a3);
                }
                var h = Vector128.Max(VectorSums.Sum4(a0, a1, a2, a3) + Vector128.Load(b1 + j), Vector128<float>.Zero);   // ReLU
                total = Vector128.FusedMultiplyAdd(h, Vector128.Load(w2 + j), total);
            }
            logits[i] = b2 + Vector128.Sum(total);
        }
    }
}
