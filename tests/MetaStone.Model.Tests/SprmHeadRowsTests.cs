using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model.Tests;

/// <summary>The engine's per-step scoring (<see cref="SprmHead.LogitsOfRows"/>) equals the head's torch forward.</summary>
public sealed class SprmHeadRowsTests
{
    [Theory]
    [InlineData(256, 32)]   // the bench's tiny shape, a best-of-32 batch
    [InlineData(128, 3)]    // the shipped tiny model
    [InlineData(896, 8)]    // Qwen2-0.5B
    public void Equals_the_torch_forward_of_the_gathered_rows(int channels, int batch)
    {
        using var scope = NewDisposeScope();
        manual_seed(channels + batch);
        using var head = new SprmHead(channels, CPU);
        var features = randn(batch, 1, channels).select(1, 0) * 3;   // a view, as the decode step's features are
        long[] rows = [batch - 1, 0, batch / 2, batch - 1];
        float[] expected;
        using (no_grad()) expected = head.Logits(features.index_select(0, tensor(rows))).data<float>().ToArray();

        float[] got;
        using (no_grad()) got = head.LogitsOfRows(features, rows);
        Assert.Equal(rows.Length, got.Length);
        for (int i = 0; i < rows.Length; i++)
            Assert.True(Math.Abs(got[i] - expected[i]) <= 1e-5 * (1 + Math.Abs(expected[i])), $"row {rows[i]}: {got[i]} vs {expected[i]}");
        Assert.Equal(got[0], got[3]);   // the same row twice

        // With gradients on (training), the torch route: the same values.
        float[] viaTorch = head.LogitsOfRows(features, rows);
        for (int i = 0; i < rows.Length; i++) Assert.Equal(expected[i], viaTorch[i], 5);
        Assert.Empty(head.LogitsOfRows(features, []));
    }

    [Fact]
    public void Rejects_a_row_outside_the_batch_and_features_of_another_width()
    {
        using var scope = NewDisposeScope();
        using var head = new SprmHead(64, CPU);
        var features = randn(4, 64);
        Assert.Throws<ArgumentOutOfRangeException>(() => head.LogitsOfRows(features, [4]));
        Assert.Throws<ArgumentOutOfRangeException>(() => head.LogitsOfRows(features, [-1]));
        var ex = Assert.Throws<ArgumentException>(() => head.LogitsOfRows(randn(4, 32), [0]));
        Assert.Contains("[N, 64]", ex.Message);
    }
}
