using MetaStone.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace MetaStone.Model.Tests.Kernels;

/// <summary>The decode attention read from the cache in place equals torch's SDPA over the same cache rows.</summary>
public sealed class HostDecodeAttentionTests
{
    public static TheoryData<ScalarType, int, int, int, int> Shapes => new()
    {
        // cache dtype, heads, kv heads, head dim, rows
        { ScalarType.Float32, 4, 2, 64, 32 },     // bench engine's tiny shape
        { ScalarType.BFloat16, 14, 2, 64, 32 },   // Qwen2-0.5B, best-of-32
        { ScalarType.BFloat16, 14, 2, 64, 1 },
        { ScalarType.Float32, 4, 2, 32, 5 },      // the shipped tiny model's head dimension
        { ScalarType.Float32, 4, 4, 16, 3 },      // no grouping
        { ScalarType.Float32, 2, 2, 64, 4 },      // no grouping, four value vectors (the two-head path, head repeated)
        { ScalarType.BFloat16, 6, 2, 64, 3 },     // groups of three: blocks of four heads, the last repeated
        { ScalarType.Float32, 8, 2, 64, 6 },      // groups of four: one whole block of heads held in registers
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Equals_sdpa_over_the_widened_cache_rows(ScalarType cacheDtype, int heads, int kvHeads, int headDim, int rows)
    {
        if (!HostLinear.IsSupported) return;   // AVX-512 only (the machines CI runs on have it)
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var generator = new torch.Generator((ulong)(heads * 1000 + rows));
        const int slots = 40, maxLength = 90;
        var keys = randn(new long[] { slots, maxLength, kvHeads, headDim }, generator: generator).to_type(cacheDtype);
        var values = randn(new long[] { slots, maxLength, kvHeads, headDim }, generator: generator).to_type(cacheDtype);
        // The query as the layer has it: a view of q and k side by side after RoPE (not contiguous).
        var qk = randn(new long[] { rows, 1, heads + kvHeads, headDim }, generator: generator);
        var q = qk.narrow(2, 0, heads);
        // Slots out of order, positions from 0 (one key) to near the end of the cache.
        var random = new Random(rows);
        long[] slotIds = [.. Enumerable.Range(0, slots).OrderBy(_ => random.Next()).Take(rows).Select(s => (long)s)];
        long[] positions = [.. Enumerable.Range(0, rows).Select(i => (long)(i == 0 ? 0 : random.Next(maxLength)))];

        var host = HostDecodeAttention.Run(q, keys, values, slotIds, positions, heads, kvHeads, headDim);

        int groups = heads / kvHeads;
        var expected = new List<Tensor>();
        for (int r = 0; r < rows; r++)
        {
            int length = (int)positions[r] + 1;
            var k = keys[slotIds[r]].narrow(0, 0, length).to_type(ScalarType.Float32).permute(1, 0, 2).unsqueeze(0);   // [1, kv, L, hd]
            var v = values[slotIds[r]].narrow(0, 0, length).to_type(ScalarType.Float32).permute(1, 0, 2).unsqueeze(0);
            var qg = q[r].reshape(1, kvHeads, groups, headDim);
            expected.Add(F.scaled_dot_product_attention(qg, k, v).reshape(1, 1, heads * headDim));
        }
        var reference = cat(expected, 0);
        double error = (host - reference).abs().max().item<float>();
        Assert.True(error < 2e-6, $"largest difference from SDPA {error:E2}");

        // Inside a host-kernel pass the (row, KV head) pairs are split over the kernel team: the same numbers.
        using (HostKernelPass.Begin())
            Assert.True(HostDecodeAttention.Run(q, keys, values, slotIds, positions, heads, kvHeads, headDim).eq(host).all().item<bool>(), "split over the team, the output changed");

        // A slot outside the cache would be read through a raw pointer: refused.
        long[] badSlots = [.. slotIds];
        badSlots[^1] = slots;
        var refused = Assert.Throws<ArgumentException>(() => HostDecodeAttention.Run(q, keys, values, badSlots, positions, heads, kvHeads, headDim));
        Assert.Contains($"slot {slots}", refused.Message);
    }
}
