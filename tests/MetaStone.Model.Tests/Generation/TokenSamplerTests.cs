using MetaStone.Model.Generation;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model.Tests.Generation;

/// <summary>The two-level inverse CDF of full-distribution sampling picks exactly what the one-level search picks.</summary>
public sealed class TokenSamplerTests
{
    [Fact]
    public void Blocked_inverse_cdf_agrees_with_the_plain_search_on_a_vocabulary_sized_distribution()
    {
        using var scope = NewDisposeScope();
        var generator = new torch.Generator(7);
        // 151,936 = Qwen's vocabulary: not a multiple of the block, so the last block is padded with zeros.
        var probs = rand(new long[] { 6, 151_936 }, generator: generator).pow(8).softmax(-1);
        probs.index_put_(tensor(0f), TensorIndex.Single(2), TensorIndex.Slice(100_000));     // row 2: mass only in its first 100,000 tokens
        var uniforms = new[] { 0f, 0.25f, 0.5f, 0.75f, 0.999999f, 1f };
        var uniform = tensor(uniforms).unsqueeze(1);
        var plain = TokenSampler.InverseCdf(probs, uniform).data<long>().ToArray();
        var blocked = TokenSampler.BlockedInverseCdf(probs, uniform).data<long>().ToArray();
        for (int row = 0; row < plain.Length; row++)
        {
            // Float sums in another order may move a boundary by one token; never further, and never onto a zero-mass token.
            Assert.InRange(blocked[row], plain[row] - 1, plain[row] + 1);
            Assert.True(probs[row, blocked[row]].item<float>() > 0, $"row {row} picked a zero-mass token {blocked[row]}");
        }
        Assert.True(blocked[2] < 100_000);
    }

    [Fact]
    public void Blocked_inverse_cdf_follows_the_distribution()
    {
        using var scope = NewDisposeScope();
        // Two tokens hold all the mass, far apart (different blocks): u below / above their split picks one or the other.
        var probs = zeros(1, 20_000);
        probs.index_put_(tensor(0.3f), TensorIndex.Single(0), TensorIndex.Single(1_500));
        probs.index_put_(tensor(0.7f), TensorIndex.Single(0), TensorIndex.Single(17_000));
        Assert.Equal(1_500, TokenSampler.BlockedInverseCdf(probs, tensor(new[] { 0.29f }).unsqueeze(1)).item<long>());
        Assert.Equal(17_000, TokenSampler.BlockedInverseCdf(probs, tensor(new[] { 0.31f }).unsqueeze(1)).item<long>());
        Assert.Equal(17_000, TokenSampler.BlockedInverseCdf(probs, tensor(new[] { 1f }).unsqueeze(1)).item<long>());
    }
}
