using MetaStone.Model.Kernels;
using static TorchSharp.torch;

namespace MetaStone.Model.Tests.Kernels;

/// <summary>
/// The hand-written CPU matmul against a float64 reference of the same operands: every row-count path (1, 2, blocks of
/// four and their remainders), weight row counts that are not a multiple of four, bias or none, bf16 and fp32 weights,
/// several threads, and callers racing each other.
/// </summary>
public sealed class HostLinearTests
{
    /// <summary>Without AVX-512 the kernel must refuse every matmul (the model then runs them all in torch); the rest of
    /// a test needs the kernel.</summary>
    private static bool KernelAvailable()
    {
        if (HostLinear.IsSupported) return true;
        using var weight = randn(4, 32);
        Assert.False(HostLinear.Takes(weight));
        return false;
    }

    public static TheoryData<int, int, int, bool, string> Shapes() => new()
    {
        { 1, 13, 32, false, "fp32" },
        { 1, 64, 896, true, "bf16" },
        { 2, 13, 48, true, "bf16" },
        { 2, 13, 64, true, "bf16" },
        { 1, 7, 4864, false, "bf16" },
        { 2, 130, 896, false, "fp32" },
        { 3, 9, 32, true, "fp32" },
        { 4, 17, 64, false, "bf16" },
        { 5, 33, 96, true, "bf16" },
        { 8, 64, 896, true, "fp32" },
        { 17, 23, 160, false, "fp32" },
        { 32, 130, 896, true, "bf16" },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void MatchesAFloat64ReferenceOfTheSameOperands(int rows, int outputs, int width, bool withBias, string dtypeName)
    {
        if (!KernelAvailable()) return;
        var dtype = TorchSettings.ParseDtype(dtypeName);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var generator = new Generator(7);
        var x = randn([rows, width], generator: generator);
        var weight = randn([outputs, width], generator: generator).to_type(dtype);
        var bias = withBias ? randn([outputs], generator: generator).to_type(dtype) : null;

        var actual = HostLinear.Forward(x, weight, bias);

        var expected = x.to_type(ScalarType.Float64).matmul(weight.to_type(ScalarType.Float64).t());
        if (bias is not null) expected = expected + bias.to_type(ScalarType.Float64);
        Assert.Equal(ScalarType.Float32, actual.dtype);
        Assert.Equal([rows, outputs], actual.shape);
        // fp32 sums of `width` exact products (bf16 × fp32 is exact in an FMA): error ~ sqrt(width) ulp of the terms.
        double worst = (actual.to_type(ScalarType.Float64) - expected).abs().max().item<double>();
        Assert.True(worst < 2e-5 * Math.Sqrt(width), $"max |Δ| = {worst:E2}");
    }

    [Fact]
    public void KeepsLeadingDimensionsAndReadsNonContiguousActivations()
    {
        if (!KernelAvailable()) return;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var x = randn(3, 2, 64).transpose(0, 1); // [2, 3, 64], not contiguous
        var weight = randn(20, 64);
        var actual = HostLinear.Forward(x, weight, null);
        Assert.Equal([2, 3, 20], actual.shape);
        Assert.True(actual.allclose(x.matmul(weight.t()), rtol: 1e-5, atol: 1e-5));
    }

    [Fact]
    public void RejectsWhatItCannotCompute()
    {
        if (!KernelAvailable()) return;
        using var scope = NewDisposeScope();
        Assert.Throws<ArgumentException>(() => HostLinear.Forward(randn(1, 32).to_type(ScalarType.BFloat16), randn(4, 32), null));
        Assert.Throws<ArgumentException>(() => HostLinear.Forward(randn(1, 48), randn(4, 32), null));
        Assert.False(HostLinear.Takes(randn(4, 40)));                          // width not a multiple of 16
        Assert.False(HostLinear.Takes(randn(32, 4).t()));                      // weight not contiguous
        Assert.False(HostLinear.Takes(randn(4, 32).to_type(ScalarType.Float16))); // fp16 weights stay in torch
        Assert.True(HostLinear.Takes(randn(4, 32).to_type(ScalarType.BFloat16)));
        Assert.Equal(0, HostLinear.DecodeMaxRows(ScalarType.Float16));
    }

    /// <summary>Many short matmuls from several threads at once: every result right (a caller that finds the team busy
    /// computes on its own thread) and no call lost in the team's wake-ups (a lost wake-up hangs; the deadline catches it).</summary>
    [Fact]
    public async Task ConcurrentCallersAllGetTheirOwnResultsWithoutHanging()
    {
        if (!KernelAvailable()) return;
        var callers = Enumerable.Range(0, 3).Select(caller => Task.Run(() =>
        {
            using var _ = no_grad();
            for (int i = 0; i < 2_000; i++)
            {
                using var scope = NewDisposeScope();
                var x = full(1, 32, (float)(caller + 1));
                var weight = ones(8, 32);
                float value = HostLinear.Forward(x, weight, null)[0, 5].item<float>();
                if (value != 32f * (caller + 1)) return $"caller {caller}, call {i}: {value}";
            }
            return null;
        })).ToArray();
        var outcomes = await Task.WhenAll(callers).WaitAsync(TimeSpan.FromSeconds(60));
        Assert.All(outcomes, outcome => Assert.Null(outcome));
    }
}
