using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MetaStone.Model.Kernels;

/// <summary>Horizontal sums of 512-bit vectors for the host kernels.</summary>
/// <remarks>
/// Why not <c>Vector512.Sum</c>: .NET 10's JIT expands it into a reduction of each 128-bit quarter on its own (~30
/// instructions, read from its disassembly). The decode attention's scores, one sum per key and query head, spent most of
/// their time there. <see cref="Sum"/> halves the vector three times instead (8 instructions, 0.8 against 1.9 ns
/// measured), and <see cref="Sum4"/> transposes four vectors into one (13 instructions for four sums).
/// </remarks>
internal static class VectorSums
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector512<float> v)
    {
        var half = v.GetLower() + v.GetUpper();
        var quarter = half.GetLower() + half.GetUpper();
        quarter += Sse.MoveHighToLow(quarter, quarter);
        quarter += Sse.Shuffle(quarter, quarter, 0b01);
        return quarter.ToScalar();
    }

    /// <summary>[Σa, Σb, Σc, Σd].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Sum4(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d)
    {
        // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] and the same for c, d.
        var ab = Avx512F.UnpackLow(a, b) + Avx512F.UnpackHigh(a, b);
        var cd = Avx512F.UnpackLow(c, d) + Avx512F.UnpackHigh(c, d);
        // Per lane: [a, b, c, d] partial sums.
        var sums = Avx512F.Shuffle(ab, cd, 0x44) + Avx512F.Shuffle(ab, cd, 0xEE);
        var half = sums.GetLower() + sums.GetUpper();
        return half.GetLower() + half.GetUpper();
    }
}
