using System.Runtime.Intrinsics;
using MetaStone.Model.Generation;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model.Tests.Generation;

/// <summary>
/// The CPU sampler against a float64 reference written from the rules alone (sort, nucleus, inverse CDF) and against the
/// torch path: the same token for the same uniform, except where float rounding moves a boundary.
/// </summary>
public sealed class HostTokenSamplerTests
{
    /// <summary>The rules in float64 with a full sort: penalty, temperature, softmax, keep while the mass before a token
    /// (descending) is below top-p and its rank below top-k, then the inverse CDF over the kept tokens — in descending
    /// order when at most <see cref="TokenSampler.CandidatePool"/> are kept, else in id order.</summary>
    private static long Reference(float[] logits, long[]? history, RowSampling row)
    {
        var x = logits.Select(v => (double)v).ToArray();
        if (history is not null && row.RepetitionPenalty != 1)
            foreach (long id in history.Distinct())
                x[id] = logits[id] > 0 ? logits[id] / (float)row.RepetitionPenalty : logits[id] * (float)row.RepetitionPenalty;
        if (row.Temperature == 0) return Array.IndexOf(x, x.Max());
        var z = x.Select(v => (double)((float)v / (float)row.Temperature)).ToArray();
        double max = z.Max();
        var w = z.Select(v => Math.Exp(v - max)).ToArray();
        double total = w.Sum();
        var order = Enumerable.Range(0, w.Length).OrderByDescending(i => w[i]).ThenBy(i => i).ToArray();
        var kept = new List<int>();
        double before = 0;
        foreach (int i in order)
        {
            if (!(before < row.TopP * total) || (row.TopK > 0 && kept.Count >= row.TopK)) break;
            kept.Add(i);
            before += w[i];
        }
        // Without truncation the whole row is walked in id order, whatever its shape.
        bool truncates = row.TopP < 1 || row.TopK > 0;
        var walk = truncates && kept.Count <= TokenSampler.CandidatePool ? kept : [.. kept.Order()];
        double target = row.Uniform * walk.Sum(i => w[i]), acc = 0;
        foreach (int i in walk)
        {
            acc += w[i];
            if (acc > target) return i;
        }
        return walk[^1];
    }

    public static TheoryData<float, int> Shapes => new()
    {
        { 0.05f, 151_936 },   // flat (random weights): the nucleus is most of the vocabulary, sampled in id order
        { 1f, 151_936 },
        { 6f, 151_936 },      // peaked (a trained model): a nucleus of a few tokens, sampled in descending order
        { 2f, 1_000 },
        { 3f, 37 },           // shorter than a vector tail and a scan block
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Picks_the_float64_references_token_and_the_torch_paths(float spread, int vocabulary)
    {
        using var scope = NewDisposeScope();
        var generator = new torch.Generator((ulong)(vocabulary + (int)(spread * 100)));
        int rows = 24;
        var logits = randn(new long[] { rows, vocabulary }, generator: generator) * spread;
        var history = randint(vocabulary, new long[] { rows, 40 }, generator: generator);
        var random = new Random(vocabulary);
        var settings = Enumerable.Range(0, rows).Select(i => new RowSampling(
            Temperature: i % 6 == 5 ? 0 : 0.5 + 0.1 * (i % 7),
            TopP: (i % 4) switch { 0 => 1.0, 1 => 0.95, 2 => 0.5, _ => 0.8 },
            TopK: i % 5 == 3 ? 20 : i % 5 == 4 ? 300 : 0,
            RepetitionPenalty: i % 3 == 0 ? 1.0 : 1.3,
            Uniform: random.NextDouble())).ToArray();

        var host = HostTokenSampler.Sample(logits, history, settings);
        var torchPicks = TokenSampler.SampleInTorch(logits, history, settings);
        var data = logits.data<float>().ToArray();
        var ids = history.data<long>().ToArray();
        int agreeWithTorch = 0, compared = 0;
        for (int r = 0; r < rows; r++)
        {
            var row = data.AsSpan(r * vocabulary, vocabulary).ToArray();
            long expected = Reference(row, ids.AsSpan(r * 40, 40).ToArray(), settings[r]);
            Assert.True(expected == host[r], $"row {r} ({settings[r]}): host picked {host[r]}, the float64 reference {expected}");
            // The torch path walks a non-truncating row in descending order when the batch truncates and the row's
            // top 256 tokens hold all its mass in fp32; compared where both paths follow the same order.
            if (settings[r].TopP < 1 || settings[r].TopK > 0 || settings[r].Temperature == 0) { compared++; if (host[r] == torchPicks[r]) agreeWithTorch++; }
        }
        // Where the nucleus fits torch's 256-token pool both paths are exact, up to torch's fp32 sums moving a boundary.
        // On flatter rows torch's threshold search also keeps the rest of its 0.27 %-wide boundary bucket (hundreds of
        // tokens), which shifts an id-order walk: there only the float64 reference above is the yardstick.
        if (spread >= 2)
            Assert.True(agreeWithTorch >= compared - 2, $"host and torch agree on {agreeWithTorch} of {compared} rows");
    }

    [Fact]
    public void Follows_the_distribution_and_never_picks_a_masked_token()
    {
        using var scope = NewDisposeScope();
        // Probabilities 0.1, 0.2, 0.3, 0.4 at ids 3, 700, 701, 1500; every other token masked (−∞).
        var logits = full(1, 2_000, float.NegativeInfinity);
        var p = new[] { (3, 0.1), (700, 0.2), (701, 0.3), (1500, 0.4) };
        foreach (var (id, prob) in p) logits[0, id] = tensor((float)Math.Log(prob));
        var counts = new Dictionary<long, int>();
        const int draws = 1000;
        for (int i = 0; i < draws; i++)
        {
            // At top-p 1 and more than the pool kept, tokens come in id order: u in [0, 0.1) → 3, [0.1, 0.3) → 700, ...
            long t = HostTokenSampler.Sample(logits, null, [new RowSampling(1, 1, 0, 1, (i + 0.5) / draws)])[0];
            counts[t] = counts.GetValueOrDefault(t) + 1;
        }
        Assert.Equal([3L, 700L, 701L, 1500L], counts.Keys.Order());
        foreach (var (id, prob) in p) Assert.InRange(counts[id], prob * draws - 1, prob * draws + 1);
        Assert.Equal(1500L, HostTokenSampler.Sample(logits, null, [new RowSampling(1, 1, 0, 1, 0.999999)])[0]);
        Assert.Equal(1500L, HostTokenSampler.Sample(logits, null, [new RowSampling(1, 0.3, 0, 1, 0.99)])[0]);   // nucleus = {1500}
    }

    [Fact]
    public void Rows_split_over_threads_draw_what_each_row_draws_alone()
    {
        using var scope = NewDisposeScope();
        var generator = new torch.Generator(21);
        var logits = randn(new long[] { 32, 151_936 }, generator: generator);
        var settings = Enumerable.Range(0, 32).Select(i => new RowSampling(0.8, 0.95, 0, 1, (i + 0.3) / 32)).ToArray();
        var together = HostTokenSampler.Sample(logits, null, settings);
        for (int r = 0; r < 32; r += 7)
            Assert.Equal(together[r], HostTokenSampler.Sample(logits.narrow(0, r, 1), null, [settings[r]])[0]);
    }

    [Fact]
    public void Edge_settings_keep_at_least_the_likeliest_token_and_bad_histories_are_refused()
    {
        using var scope = NewDisposeScope();
        var generator = new torch.Generator(8);
        var logits = randn(new long[] { 2, 151_936 }, generator: generator) * 3;
        long argmax = logits[0].argmax().item<long>();
        // A confident row at a low temperature: three or so non-zero weights, top-k 50 above them, top-p 1.
        var cold = new RowSampling(0.005, 1.0, 50, 1, 0.7);
        Assert.Equal(Reference(logits[0].data<float>().ToArray(), null, cold), HostTokenSampler.Sample(logits, null, [cold, cold])[0]);
        // A top-p below the likeliest token's probability (down to 0, which the API refuses) keeps that token alone.
        foreach (double topP in new[] { 1e-9, 0.0 })
            Assert.Equal(argmax, HostTokenSampler.Sample(logits, null, [new RowSampling(1, topP, 0, 1, 0.99), new RowSampling(1, topP, 0, 1, 0.5)])[0]);
        // A top-k beyond the vocabulary is no top-k.
        var wide = new RowSampling(0.8, 1.0, 1_000_000, 1, 0.3);
        Assert.Equal(Reference(logits[1].data<float>().ToArray(), null, wide), HostTokenSampler.Sample(logits.narrow(0, 1, 1), null, [wide])[0]);
        // A history with fewer rows than the batch would be read past its end.
        var error = Assert.Throws<ArgumentException>(() => HostTokenSampler.Sample(logits, tensor(new long[,] { { 1, 2 } }),
            [new RowSampling(0.8, 0.95, 0, 1.3, 0.5), new RowSampling(0.8, 0.95, 0, 1.3, 0.5)]));
        Assert.Contains("history", error.Message);
    }

    [Fact]
    public void A_row_of_nan_logits_fails_with_its_row_named()
    {
        using var scope = NewDisposeScope();
        var logits = zeros(3, 500);
        logits[1, 7] = tensor(float.NaN);
        var settings = Enumerable.Range(0, 3).Select(i => new RowSampling(0.8, 0.95, 0, 1, 0.5)).ToArray();
        var error = Assert.Throws<InvalidOperationException>(() => HostTokenSampler.Sample(logits, null, settings));
        Assert.Contains("row 1", error.Message);
    }

    [Fact]
    public void Its_exp_is_as_close_to_float64_as_an_fp32_exp_can_be()
    {
        var random = new Random(4);
        double worst = 0;
        for (int i = 0; i < 20_000; i++)
        {
            var x = new float[16];
            for (int j = 0; j < 16; j++) x[j] = (float)(-random.NextDouble() * (i % 2 == 0 ? 3 : 87));
            var e = HostTokenSampler.ExpNonPositive(Vector512.Create(x));
            for (int j = 0; j < 16; j++)
            {
                double exact = Math.Exp(x[j]);
                if (exact > 1.2e-38) worst = Math.Max(worst, Math.Abs(e[j] - exact) / exact);
            }
        }
        Assert.True(worst < 1.2e-7, $"largest relative error {worst:E2} (2 ulp = 1.2e-7)");
        Assert.Equal(0f, HostTokenSampler.ExpNonPositive(Vector512.Create(float.NegativeInfinity))[0]);
        Assert.Equal(1f, HostTokenSampler.ExpNonPositive(Vector512<float>.Zero)[0]);
    }
}
