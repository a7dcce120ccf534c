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

    /// <summary>The sort-based nucleus of one row: the tokens a descending sort keeps while the mass before them is below top-p.</summary>
    private static HashSet<long> SortedNucleus(Tensor row, double topP)
    {
        var (values, indices) = row.sort(descending: true);
        var v = values.data<float>().ToArray();
        var ids = indices.data<long>().ToArray();
        var kept = new HashSet<long>();
        double before = 0;
        for (int i = 0; i < v.Length && before < topP; i++)
        {
            kept.Add(ids[i]);
            before += v[i];
        }
        return kept;
    }

    [Theory]
    [InlineData(0.95)]
    [InlineData(0.5)]
    [InlineData(0.05)]
    public void Threshold_search_keeps_the_sorted_nucleus_of_flat_vocabulary_sized_rows(double topP)
    {
        using var scope = NewDisposeScope();
        var generator = new torch.Generator(11);
        // Flat rows (as from random weights): the nucleus lies far below the 256-token pool.
        var probs = (randn(new long[] { 3, 151_936 }, generator: generator) * tensor(new[] { 0.5f, 1f, 2f }).unsqueeze(1)).softmax(-1);
        var threshold = TokenSampler.SearchThreshold(probs, probs.max(-1, keepdim: true).values, full(3, 1, (float)topP));
        for (int r = 0; r < 3; r++)
        {
            var expected = SortedNucleus(probs[r], topP);
            var kept = nonzero(probs[r].ge(threshold[r])).squeeze(1).data<long>().ToHashSet();
            Assert.Superset(expected, kept);
            // Anything more is the boundary bucket: within a factor 2^(1/256) of the smallest kept probability (plus float
            // rounding of the edge, and of the reference's float64 running sum, which may move the boundary by a token).
            double smallest = expected.Min(id => (double)probs[r, id].item<float>());
            var extra = kept.Except(expected).Select(id => (double)probs[r, id].item<float>()).ToList();
            Assert.All(extra, p => Assert.True(p >= smallest * Math.Pow(2, -1.0 / TokenSampler.BucketsPerOctave) * (1 - 1e-5),
                $"row {r}: kept p = {p:E4}, more than one bucket below the nucleus' smallest {smallest:E4}"));
            Assert.True(extra.Count < expected.Count / 50 + 4, $"row {r}: {extra.Count} tokens beyond the sorted nucleus of {expected.Count}");
        }
    }

    [Fact]
    public void A_peaked_row_samples_only_inside_its_nucleus()
    {
        using var scope = NewDisposeScope();
        // 1,004 tokens: 0.5, 0.3, 0.15, 0.05 (× 0.999) and a tail of 1,000 × 1e-6; the 256-token pool covers top-p 0.9.
        var probs = cat([tensor(new[] { 0.5f, 0.3f, 0.15f, 0.05f }).unsqueeze(0) * 0.999f, full(1, 1000, 0.001f / 1000)], dim: 1);
        var logits = probs.log();
        var picked = Enumerable.Range(0, 50).Select(i => TokenSampler.Sample(logits, null, [new RowSampling(1, 0.9, 0, 1, (i + 0.5) / 50)])[0]).ToHashSet();
        Assert.Equal([0L, 1L, 2L], picked.Order());      // 0.5 + 0.3 < 0.9: the third token is kept, the fourth not
        var topK2 = Enumerable.Range(0, 50).Select(i => TokenSampler.Sample(logits, null, [new RowSampling(1, 1.0, 2, 1, (i + 0.5) / 50)])[0]).ToHashSet();
        Assert.Equal([0L, 1L], topK2.Order());
        Assert.Equal(0L, TokenSampler.Sample(logits, null, [new RowSampling(1, 0.4, 0, 1, 0.99)])[0]);   // the first token always stays
    }

    [Fact]
    public void A_rows_truncated_sample_does_not_depend_on_the_other_rows()
    {
        using var scope = NewDisposeScope();
        var generator = new torch.Generator(5);
        var flat = randn(new long[] { 1, 151_936 }, generator: generator);                 // needs the threshold search
        var peaked = randn(new long[] { 1, 151_936 }, generator: generator) * 30f;          // its pool covers top-p
        var flatRow = new RowSampling(1.0, 0.9, 0, 1, 0.37);
        var peakedRow = new RowSampling(0.6, 0.95, 0, 1, 0.81);
        var topKRow = new RowSampling(1.0, 1.0, 40, 1, 0.52);
        long flatAlone = TokenSampler.Sample(flat, null, [flatRow])[0];
        long peakedAlone = TokenSampler.Sample(peaked, null, [peakedRow])[0];
        long topKAlone = TokenSampler.Sample(flat, null, [topKRow])[0];
        var mixed = TokenSampler.Sample(cat([peaked, flat, flat], 0), null, [peakedRow, flatRow, topKRow]);
        Assert.Equal([peakedAlone, flatAlone, topKAlone], mixed);
        var top40 = flat[0].topk(40).indexes.data<long>().ToHashSet();
        Assert.Contains(topKAlone, top40);
    }

    [Fact]
    public void In_place_softmax_matches_torch_and_sampling_leaves_the_callers_logits_alone()
    {
        using var scope = NewDisposeScope();
        var generator = new torch.Generator(11);
        var logits = (randn(new long[] { 4, 151_936 }, generator: generator) * 3).to_type(ScalarType.Float32);
        // Against a float64 softmax: as close as torch's own fp32 softmax is (both sum 151,936 terms in fp32).
        var exact = (logits.to_type(ScalarType.Float64) / 0.7).softmax(-1);
        var torchError = ((logits / 0.7).softmax(-1).to_type(ScalarType.Float64) - exact).abs().div(exact).max().item<double>();
        var inPlace = TokenSampler.SoftmaxInPlace(logits.clone().div_(0.7.ToScalar()));
        var inPlaceError = (inPlace.to_type(ScalarType.Float64) - exact).abs().div(exact).max().item<double>();
        Assert.True(inPlaceError <= Math.Max(2 * torchError, 1e-6), $"in-place softmax relative error {inPlaceError:E2}, torch's {torchError:E2}");

        var before = logits.clone();
        var history = tensor(new long[,] { { 1, 2 }, { 3, 3 }, { 5, 8 }, { 13, 21 } });
        var rows = Enumerable.Range(0, 4).Select(i => new RowSampling(0.8, i % 2 == 0 ? 0.95 : 1.0, i == 3 ? 40 : 0, 1.1, (i + 0.5) / 4)).ToArray();
        // Both paths: the CPU one (HostTokenSampler) and the torch one GPU logits take.
        foreach (var sample in new Func<Tensor, Tensor?, RowSampling[], long[]>[] { TokenSampler.Sample, TokenSampler.SampleInTorch })
        {
            var first = sample(logits, history, rows);
            Assert.True(logits.eq(before).all().item<bool>(), "sampling wrote into the logits it was given");
            // The same call again (the workspaces reused) draws the same tokens.
            Assert.Equal(first, sample(logits, history, rows));
        }
    }
}
