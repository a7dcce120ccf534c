using MetaStone.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model.Tests.Kernels;

/// <summary>The native AVX512-BF16 kernel is there on this machine type and computes bf16(x)·Wᵀ + b in fp32.</summary>
public sealed class NativeBf16Tests
{
    [Fact]
    public void Is_loaded_next_to_the_assembly_on_a_cpu_with_avx512_bf16()
    {
        // CI and development machines have avx512_bf16: there the library must load (a missing copy or a broken
        // export would otherwise silently fall back to torch and lose the speed).
        if (!CpuFeatures.All.Contains("avx512_bf16") || !HostLinear.IsSupported) return;
        Assert.True(NativeBf16.IsAvailable, $"native bf16 kernel unavailable: {NativeBf16.Unavailable}");
    }

    public static TheoryData<int, int, int, bool> Shapes => new()
    {
        // rows, outputs, width, bias
        { 32, 1152, 896, true },    // Qwen2-0.5B q/k/v at best-of-32
        { 32, 896, 4864, false },   // down_proj
        { 7, 70, 100, true },       // tails: rows not a multiple of 4, outputs not of 4, width not of 32
        { 14, 42, 1100, true },     // rows 6 + 4 + 4; width in two blocks of K, the second masked
        { 33, 13, 2080, false },    // rows 6·5 + 2 + 1; width in three blocks, the last one chunk
        { 5, 8, 1024, true },       // rows 4 + 1; width exactly one block
        { 1, 3, 16, false },
        // From NativeBf16.ActivationPackedMinRows rows, the activation-packed kernel:
        { 24, 50, 1104, true },     // 24 rows in two 16-row vectors, the second half padding; width an odd multiple of 16
        { 40, 37, 896, true },      // rows 32 + 8 (the second block one vector); outputs 3 tiles of 12 + 1
        { 64, 151, 256, false },    // two full blocks of 32 rows; outputs split over the team in whole tiles
        { 26, 200, 100, true },     // width not a multiple of 16: the row kernel instead
        { 300, 40, 128, true },     // rows packed in two chunks (256 + 44)
    };

    public static TheoryData<int, int, int, bool> Fp32Shapes => new()
    {
        // rows, outputs, width, bias: fp32 weights, the transposed-activation kernel at any row count
        { 32, 1152, 896, true },    // Qwen2-0.5B q/k/v at best-of-32
        { 32, 896, 4864, false },   // down_proj
        { 24, 50, 1104, true },     // 24 rows, the second vector half padding; width an odd multiple of 16
        { 40, 37, 256, true },      // rows 32 + 8; outputs 3 tiles of 12 + 1
        { 5, 13, 64, false },       // one vector, mostly padding
        { 300, 40, 128, true },     // rows in two chunks (256 + 44)
    };

    /// <summary>The exact kernels: fp32 weights, or bf16 weights widened (prefill), times the unrounded activations.</summary>
    [Theory]
    [MemberData(nameof(Fp32Shapes))]
    public void Exact_kernels_equal_a_float64_product_of_unrounded_activations(int rows, int outputs, int width, bool withBias)
    {
        if (!NativeBf16.IsAvailable) return;
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var generator = new torch.Generator((ulong)(rows * 11 + outputs));
            var x = randn(new long[] { rows, width }, generator: generator);
            var weight = (randn(new long[] { outputs, width }, generator: generator) * 0.05).to_type(dtype);
            var bias = withBias ? randn(new long[] { outputs }, generator: generator) : null;
            using var pass = HostKernelPass.Begin();
            var y = dtype == ScalarType.Float32 ? NativeBf16.Forward(x, weight, bias) : NativeBf16.ForwardExact(x, weight, bias);
            var expected = x.to_type(ScalarType.Float64).matmul(weight.to_type(ScalarType.Float64).t());
            if (bias is not null) expected += bias.to_type(ScalarType.Float64);
            double scale = expected.abs().max().item<double>();
            double error = (y.to_type(ScalarType.Float64) - expected).abs().max().item<double>();
            Assert.True(error <= scale * 1e-6 * Math.Sqrt(width), $"{dtype}: largest error {error:E2} at scale {scale:E2}");
        }
        Assert.Throws<ArgumentException>(() => NativeBf16.Forward(randn(rows, 40), randn(outputs, 40), null));
        Assert.Throws<ArgumentException>(() => NativeBf16.ForwardExact(randn(rows, 40), randn(outputs, 40).to_type(ScalarType.BFloat16), null));
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Equals_a_float64_product_of_the_rounded_operands(int rows, int outputs, int width, bool withBias)
    {
        if (!NativeBf16.IsAvailable) return;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var generator = new torch.Generator((ulong)(rows * 7 + outputs));
        var x = randn(new long[] { rows, width }, generator: generator);
        var weight = (randn(new long[] { outputs, width }, generator: generator) * 0.05).to_type(ScalarType.BFloat16);
        var bias = withBias ? randn(new long[] { outputs }, generator: generator).to_type(ScalarType.BFloat16) : null;
        using (HostKernelPass.Begin())   // as in an engine step: the rows split over the kernel team
        {
            var y = NativeBf16.Forward(x, weight, bias);
            // The operands as the kernel sees them: x rounded to bf16 (nearest even), exact bf16 weights; float64 sums.
            var expected = x.to_type(ScalarType.BFloat16).to_type(ScalarType.Float64).matmul(weight.to_type(ScalarType.Float64).t());
            if (bias is not null) expected += bias.to_type(ScalarType.Float64);
            double scale = expected.abs().max().item<double>();
            double error = (y.to_type(ScalarType.Float64) - expected).abs().max().item<double>();
            // fp32 accumulation over `width` products: relative to the output's scale, a few ulp times √width.
            Assert.True(error <= scale * 1e-6 * Math.Sqrt(width), $"largest error {error:E2} at scale {scale:E2}");
            // Into a given buffer: the same numbers, in that buffer.
            var buffer = empty(rows, outputs);
            Assert.Same(buffer, NativeBf16.Forward(x, weight, bias, buffer));
            Assert.True(buffer.eq(y).all().item<bool>());
        }
    }
}
