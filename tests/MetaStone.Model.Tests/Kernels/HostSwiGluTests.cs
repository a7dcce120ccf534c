using MetaStone.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace MetaStone.Model.Tests.Kernels;

/// <summary>The MLP gate computed on the host equals torch's <c>silu(gate) · up</c> in float64.</summary>
public sealed class HostSwiGluTests
{
    [Theory]
    [InlineData(32, 4864)]   // Qwen2-0.5B, best-of-32
    [InlineData(1, 688)]     // bench engine's tiny shape, one sequence
    [InlineData(3, 40)]      // a width that is not whole vectors: the scalar tail
    public void Equals_silu_of_the_gate_times_up(int rows, int ffn)
    {
        if (!HostLinear.IsSupported) return;   // AVX-512 only (the machines CI runs on have it)
        using var scope = NewDisposeScope();
        var generator = new torch.Generator((ulong)(rows * 7919 + ffn));
        // Gates over the whole range a model produces, out to where e^−|g| underflows (|g| > 87) and beyond.
        var gate = randn(new long[] { rows, 1, ffn }, generator: generator) * 4;
        gate[0, 0, 0] = tensor(0f); gate[0, 0, 1] = tensor(-100f); gate[0, 0, 2] = tensor(100f); gate[0, 0, 3] = tensor(-87.5f);
        var up = randn(new long[] { rows, 1, ffn }, generator: generator);
        var gateUp = cat([gate, up], -1);

        var got = HostSwiGlu.Forward(gateUp, ffn);
        var expected = F.silu(gate.to_type(ScalarType.Float64)) * up.to_type(ScalarType.Float64);

        Assert.Equal(new long[] { rows, 1, ffn }, got.shape);
        double worst = (got.to_type(ScalarType.Float64) - expected).abs().div(expected.abs() + 1e-30).where(expected.abs() > 1e-30, zeros_like(expected)).max().item<double>();
        Assert.True(worst < 1e-6, $"relative error {worst:E2}");
        Assert.Equal(0f, got[0, 0, 0].item<float>());
    }

    [Fact]
    public void Rejects_a_tensor_that_is_not_gate_and_up_side_by_side()
    {
        if (!HostLinear.IsSupported) return;
        using var scope = NewDisposeScope();
        var ex = Assert.Throws<ArgumentException>(() => HostSwiGlu.Forward(randn(2, 30), 16));
        Assert.Contains("[..., 32]", ex.Message);
    }
}
