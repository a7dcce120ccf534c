using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model;

/// <summary>
/// Scalar arguments for torch ops without TorchSharp's implicit <see cref="Scalar"/> conversions.
/// </summary>
/// <remarks>
/// <para>In TorchSharp 0.107 a <see cref="Scalar"/> is a plain <c>IntPtr</c> wrapper (not a SafeHandle, not tracked by
/// dispose scopes) freed by its finalizer. An implicit one — <c>x + 1e-6</c>, <c>x &gt; 0</c>, <c>x.square()</c>
/// (= <c>pow(2)</c>), and every <c>a + b</c> on tensors, whose <c>alpha</c> is an implicit <c>1</c> — is unreachable
/// as soon as its handle has been read for the P/Invoke, so a garbage collection during the native call lets the
/// finalizer thread free the <c>c10::Scalar</c> while libtorch is still reading it: "Expected false to be true …
/// toFloat at Scalar.h:140" (or an INTERNAL ASSERT at Scalar.h:279), or silent heap corruption. A busy silo
/// (allocating Orleans threads, two cores shared) collects often enough to hit that window (issue 11).</para>
/// <para>Rules for code that runs torch ops: never let a number become a Scalar implicitly. Use the shared constants
/// here (static fields: rooted for the life of the process, so never finalised; never disposed; read-only in libtorch,
/// so safe from any thread), or the helpers, which dispose their Scalar after the call (which keeps it alive through
/// it). <c>EngineGcPressureTests</c> runs the model under back-to-back collections to catch a relapse.</para>
/// </remarks>
public static class TorchScalars
{
    public static readonly Scalar Zero = 0.ToScalar();
    public static readonly Scalar One = 1.ToScalar();
    public static readonly Scalar MinusOne = (-1).ToScalar();

    /// <summary><paramref name="a"/> − <paramref name="b"/> (the operator passes an implicit alpha Scalar).</summary>
    public static Tensor Minus(this Tensor a, Tensor b) => a.add(b, MinusOne);

    /// <summary><paramref name="a"/> + <paramref name="b"/> (the operator passes an implicit alpha Scalar).</summary>
    public static Tensor Plus(this Tensor a, Tensor b) => a.add(b, One);

    /// <summary><paramref name="a"/> + <paramref name="value"/>.</summary>
    public static Tensor Plus(this Tensor a, double value)
    {
        using var s = value.ToScalar();
        return a.add(s, One);
    }

    /// <summary><paramref name="a"/> / <paramref name="value"/>.</summary>
    public static Tensor DividedBy(this Tensor a, double value)
    {
        using var s = value.ToScalar();
        return a.div(s);
    }

    /// <summary>Element-wise <paramref name="a"/> &gt; 0.</summary>
    public static Tensor Positive(this Tensor a) => a.gt(Zero);

    /// <summary>Element-wise <paramref name="a"/> &lt; <paramref name="value"/>.</summary>
    public static Tensor LessThan(this Tensor a, long value)
    {
        using var s = value.ToScalar();
        return a.lt(s);
    }

    /// <summary><paramref name="a"/> filled with <paramref name="value"/> in place.</summary>
    public static Tensor FillWith(this Tensor a, double value)
    {
        using var s = value.ToScalar();
        return a.fill_(s);
    }

    /// <summary>A 1-D tensor of <paramref name="size"/> copies of <paramref name="value"/>.</summary>
    public static Tensor Full(long size, long value, ScalarType dtype, Device device)
    {
        using var s = value.ToScalar();
        return full(size, s, dtype: dtype, device: device);
    }

    /// <summary>[start, stop) as int64 (or <paramref name="dtype"/>), step 1.</summary>
    public static Tensor Arange(long start, long stop, Device device, ScalarType dtype = ScalarType.Int64)
    {
        using var first = start.ToScalar();
        using var end = stop.ToScalar();
        return arange(first, end, One, dtype, device);
    }
}
