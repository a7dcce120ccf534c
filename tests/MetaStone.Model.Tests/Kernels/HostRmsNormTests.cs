using MetaStone.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model.Tests.Kernels;

/// <summary>The host RMSNorm equals the norm computed in float64, and torch's fp32 norm to fp32 rounding.</summary>
public sealed class HostRmsNormTests
{
    [Theory]
    [InlineData(32, 896, ScalarType.BFloat16)]   // Qwen2-0.5B, best-of-32, a bf16 model's weight
    [InlineData(1, 256, ScalarType.Float32)]     // bench engine's tiny shape, one sequence
    [InlineData(3, 40, ScalarType.Float32)]      // a width that is not whole vectors: the scalar tail
    [InlineData(2, 40, ScalarType.BFloat16)]
    public void Equals_the_norm_in_float64(int rows, int hidden, ScalarType weightDtype)
    {
        if (!HostLinear.IsSupported) return;   // AVX-512 only (the machines CI runs on have it)
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var generator = new torch.Generator((ulong)(rows * 31 + hidden));
        var x = randn(new long[] { rows, 1, hidden }, generator: generator) * 3;
        x[0, 0] = x[0, 0] * 1e-3;   // a row of small values: eps matters there
        var norm = new RmsNorm(hidden, 1e-6, weightDtype, CPU);
        norm.parameters().First().copy_(randn(new long[] { hidden }, generator: generator).to_type(weightDtype));
        var weight = norm.parameters().First();

        var got = HostRmsNorm.Forward(x, weight, 1e-6f);
        var x64 = x.to_type(ScalarType.Float64);
        var expected = x64 * (x64.square().mean([-1], keepdim: true) + 1e-6).rsqrt() * weight.to_type(ScalarType.Float64);
        Assert.Equal(x.shape, got.shape);
        double worst = ((got.to_type(ScalarType.Float64) - expected).abs() / (expected.abs() + 1e-30)).where(expected.abs() > 1e-12, zeros_like(expected)).max().item<double>();
        Assert.True(worst < 2e-6, $"relative error against float64 {worst:E2}");
        // The torch path of the same module (what training and other devices run) agrees to fp32 rounding.
        double againstTorch = (got - norm.Forward(x)).abs().max().item<float>() / expected.abs().max().item<double>();
        Assert.True(againstTorch < 1e-6, $"against torch's fp32 norm {againstTorch:E2}");
    }

    [Fact]
    public void Rejects_activations_of_another_width_or_dtype()
    {
        if (!HostLinear.IsSupported) return;
        using var scope = NewDisposeScope();
        var ex = Assert.Throws<ArgumentException>(() => HostRmsNorm.Forward(randn(2, 30), ones(16), 1e-6f));
        Assert.Contains("[2, 30]", ex.Message);
        Assert.Throws<ArgumentException>(() => HostRmsNorm.Forward(randn(2, 16).to_type(ScalarType.Float64), ones(16), 1e-6f));
    }
}
