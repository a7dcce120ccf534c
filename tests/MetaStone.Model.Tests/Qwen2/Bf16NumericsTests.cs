using MetaStone.Model.Checkpoints;
using MetaStone.Model.Kernels;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MetaStone.Model.Tests.Qwen2;

/// <summary>
/// The bf16 path against a reference that uses the same bf16-rounded weights but computes in fp32 through torch's
/// kernels (our fp32 path, which matches the float64 reference to 1e-7): what is left is the error of computing with
/// bf16 weights (issue 13: ≤ 5e-4, llama.cpp's figure).
/// </summary>
/// <remarks>
/// Measured on these fixtures (worst top-5 |Δp|, plain / tied): bf16 residual stream and bf16 logits 1.15e-2 / 2.33e-2;
/// fp32 residual stream, norms, softmax and refined logits 5.1e-3 / 2.2e-2; llama.cpp's semantics (activations rounded
/// to bf16 at every matmul input, fp32 keys and values) emulated in our model 5.4e-3 / 1.1e-2; with the host kernel
/// (exact bf16 weights times unrounded activations, no rounding of outputs) and an fp32 KV cache, the full forward is
/// the fp32 computation up to summation order. Decode batches of more than four rows run the native AVX512-BF16 kernel
/// (rounded activations, fp32 outputs) or, without it, oneDNN's bf16 matmuls (rounded activations and outputs), for
/// throughput: <see cref="Bf16BatchedDecodeStaysNearTheReference"/> bounds both.
/// </remarks>
public sealed class Bf16NumericsTests(ITestOutputHelper output)
{

    /// <summary>The fixture's weights rounded to bf16, loaded into a model of <paramref name="dtype"/>; an fp32 model
    /// runs torch's kernels (an independent summation from the host kernel's).</summary>
    internal static Qwen2ForCausalLM LoadBf16RoundedModel(string fixture, ScalarType dtype)
    {
        var dir = TestPaths.Fixture(fixture);
        var config = Qwen2Config.Load(Path.Combine(dir, "config.json"));
        var model = new Qwen2ForCausalLM(config, dtype, CPU) { UseHostKernels = dtype != ScalarType.Float32 };
        model.eval();
        var tensors = CheckpointDirectory.Load(dir);
        var rounded = tensors.ToDictionary(kv => kv.Key, kv => kv.Value.to_type(ScalarType.BFloat16).to_type(ScalarType.Float32));
        model.LoadWeights(rounded, _ => Path.Combine(dir, "model.safetensors"));
        foreach (var t in tensors.Values.Concat(rounded.Values)) t.Dispose();
        return model;
    }

    /// <summary>Largest |p_bf16 − p_ref| over the reference's five most likely tokens, at every prompt position.</summary>
    internal static double WorstTopFiveProbabilityError(Qwen2ForCausalLM reference, Qwen2ForCausalLM bf16, long[] ids)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var input = tensor(ids).unsqueeze(0);
        var expected = reference.ForwardFull(input).Logits[0].softmax(-1);
        var actual = bf16.ForwardFull(input).Logits[0].softmax(-1);
        var top = expected.topk(5, dim: -1).indexes;
        return (expected.gather(1, top) - actual.gather(1, top)).abs().max().item<float>();
    }

    [Theory]
    [InlineData("qwen2-tiny-random")]
    [InlineData("qwen2-tiny-random-tied")]
    public void Bf16TopFiveProbabilitiesMatchTheBf16RoundedWeightsReference(string fixture)
    {
        using var reference = LoadBf16RoundedModel(fixture, ScalarType.Float32);
        using var bf16 = LoadBf16RoundedModel(fixture, ScalarType.BFloat16);
        var (ids, _, _, greedy) = ReferenceForwardTests.LoadReference(fixture);
        // The fixture's prompt, and the prompt followed by its greedy continuation (longer context, other tokens).
        double worst = Math.Max(
            WorstTopFiveProbabilityError(reference, bf16, ids),
            WorstTopFiveProbabilityError(reference, bf16, [.. ids, .. greedy]));
        output.WriteLine($"{fixture}: worst top-5 |Δp| = {worst:E2}");
        Assert.True(worst <= 5e-4, $"{fixture}: bf16 top-5 |Δp| = {worst:E2} > 5e-4");
    }

    /// <summary>A bf16 decode batch too large for the exact host kernel: the native AVX512-BF16 kernel where the machine
    /// has it (rounded activations, fp32 outputs; measured 2.6e-3 / 7.1e-3, against 3.2e-3 / 6.5e-3 when these batches ran
    /// oneDNN's matmuls after an exact prefill), and torch everywhere with host kernels off; bounds just above. The prompt prefilled once, then the greedy continuation
    /// decoded in 8 slots at once; every slot's probabilities against the reference's full forward at the same positions.</summary>
    [Theory]
    [InlineData("qwen2-tiny-random", 4e-3, true, 8)]
    [InlineData("qwen2-tiny-random-tied", 8e-3, true, 8)]
    // 32 slots: the native activation-packed kernel (NativeBf16.ActivationPackedMinRows), the same rounding.
    [InlineData("qwen2-tiny-random", 4e-3, true, 32)]
    [InlineData("qwen2-tiny-random-tied", 8e-3, true, 32)]
    // Host kernels off: torch everywhere, the prefill too (measured 4.4e-3 / 1.75e-2).
    [InlineData("qwen2-tiny-random", 5e-3, false, 8)]
    [InlineData("qwen2-tiny-random-tied", 2e-2, false, 8)]
    public void Bf16BatchedDecodeStaysNearTheReference(string fixture, double tolerance, bool hostKernels, int slots)
    {
        Assert.True(slots > HostLinear.Bf16DecodeMaxRows, "the batch must be one the exact host kernel leaves to another");
        using var reference = LoadBf16RoundedModel(fixture, ScalarType.Float32);
        using var bf16 = LoadBf16RoundedModel(fixture, ScalarType.BFloat16);
        bf16.UseHostKernels = hostKernels;
        var (ids, _, _, greedy) = ReferenceForwardTests.LoadReference(fixture);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var expected = reference.ForwardFull(tensor((long[])[.. ids, .. greedy]).unsqueeze(0)).Logits[0].softmax(-1);
        using var cache = new KvCache(bf16.Config, slots, ids.Length + greedy.Length + 1, CPU, bf16.KvDtype);
        bf16.Prefill(tensor(ids).unsqueeze(0), cache, 0, 0);
        cache.CopyPrefix(0, [.. Enumerable.Range(1, slots - 1)], ids.Length);
        double worst = 0;
        long[] slotIds = [.. Enumerable.Range(0, slots).Select(i => (long)i)];
        for (int i = 0; i < greedy.Length; i++)
        {
            long position = ids.Length + i;
            var logits = bf16.Decode(full(slots, greedy[i]), cache, slotIds, [.. Enumerable.Repeat(position, slots)]).Logits;
            var actual = logits.softmax(-1);
            var want = expected[position];
            var top = want.topk(5).indexes;
            worst = Math.Max(worst, (actual.index_select(1, top) - want.index_select(0, top).unsqueeze(0)).abs().max().item<float>());
        }
        output.WriteLine($"{fixture}: batched bf16 decode ({(hostKernels && NativeBf16.IsAvailable ? "native kernel" : "torch")}), worst top-5 |Δp| = {worst:E2}");
        Assert.True(worst <= tolerance, $"{fixture}: batched bf16 decode top-5 |Δp| = {worst:E2} > {tolerance:E1}");
    }

    /// <summary>A decode step given a logits buffer (the engine's, larger than the batch) returns the same logits as
    /// without one, written into the buffer's first rows.</summary>
    [Fact]
    public void Bf16DecodeIntoALogitsBufferEqualsAFreshTensor()
    {
        const int slots = 8;
        using var bf16 = LoadBf16RoundedModel("qwen2-tiny-random-tied", ScalarType.BFloat16);
        var (ids, _, _, greedy) = ReferenceForwardTests.LoadReference("qwen2-tiny-random-tied");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var fresh = new KvCache(bf16.Config, slots, ids.Length + 4, CPU, bf16.KvDtype);
        using var buffered = new KvCache(bf16.Config, slots, ids.Length + 4, CPU, bf16.KvDtype);
        var buffer = full(slots + 3, bf16.Config.VocabSize, float.NaN);
        long[] slotIds = [.. Enumerable.Range(0, slots).Select(i => (long)i)];
        foreach (var cache in new[] { fresh, buffered })
        {
            bf16.Prefill(tensor(ids).unsqueeze(0), cache, 0, 0);
            cache.CopyPrefix(0, [.. Enumerable.Range(1, slots - 1)], ids.Length);
        }
        for (int i = 0; i < 3; i++)
        {
            long[] positions = [.. Enumerable.Repeat((long)ids.Length + i, slots)];
            var expected = bf16.Decode(full(slots, greedy[i]), fresh, slotIds, positions).Logits;
            var actual = bf16.Decode(full(slots, greedy[i]), buffered, slotIds, positions, buffer).Logits;
            Assert.True(actual.eq(expected).all().item<bool>(), $"step {i}: logits differ with a buffer");
            Assert.Equal(HostLinear.DataPointer(buffer), HostLinear.DataPointer(actual));
            Assert.True(buffer.narrow(0, slots, 3).isnan().all().item<bool>(), "rows past the batch were written");
        }
    }

    /// <summary>A bf16 KV cache (the memory-saving option): the full forward rounds keys and values the same way, so
    /// cached greedy decoding still equals it; a cache of another dtype than the model's is refused by name.</summary>
    [Fact]
    public void Bf16KvCacheOptionKeepsCachedEqualToFullAndRefusesAMismatchedCache()
    {
        using var model = LoadBf16RoundedModel("qwen2-tiny-random", ScalarType.BFloat16);
        model.KvDtype = ScalarType.BFloat16;
        var (ids, _, _, _) = ReferenceForwardTests.LoadReference("qwen2-tiny-random");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var cache = new KvCache(model.Config, slots: 1, maxLength: ids.Length + 9, CPU, ScalarType.BFloat16);
        var step = model.Prefill(tensor(ids).unsqueeze(0), cache, slot: 0, start: 0);
        var sequence = new List<long>(ids);
        for (int i = 0; i < 8; i++)
        {
            long next = step.Logits.argmax(-1).item<long>();
            Assert.Equal(model.ForwardFull(tensor(sequence.ToArray()).unsqueeze(0), allPositions: false).Logits.argmax(-1).item<long>(), next);
            sequence.Add(next);
            step = model.Decode(tensor(new[] { next }), cache, [0L], [sequence.Count - 1L]);
        }

        using var wrong = new KvCache(model.Config, slots: 1, maxLength: 8, CPU, ScalarType.Float32);
        var error = Assert.Throws<ArgumentException>(() => model.Prefill(tensor(ids.Take(4).ToArray()).unsqueeze(0), wrong, 0, 0));
        Assert.Contains("float32", error.Message);
        Assert.Contains("bfloat16", error.Message);
        Assert.Throws<ArgumentException>(() => model.KvDtype = ScalarType.Int64);
    }

    /// <summary>Greedy decoding through the KV cache and greedy decoding by re-running the full forward over the whole
    /// sequence each step pick the same 32 tokens in bf16.</summary>
    [Theory]
    [InlineData("qwen2-tiny-random")]
    [InlineData("qwen2-tiny-random-tied")]
    public void Bf16CachedGreedyDecodeEqualsFullForwardFor32Tokens(string fixture)
    {
        using var model = LoadBf16RoundedModel(fixture, ScalarType.BFloat16);
        var (ids, _, _, _) = ReferenceForwardTests.LoadReference(fixture);
        const int newTokens = 32;
        using var cache = new KvCache(model.Config, slots: 3, maxLength: ids.Length + newTokens + 1, CPU, model.KvDtype);
        using var scope = NewDisposeScope();
        using var _ = no_grad();

        var cached = new List<long>();
        var step = model.Prefill(tensor(ids).unsqueeze(0), cache, slot: 2, start: 0);
        long position = ids.Length;
        for (int i = 0; i < newTokens; i++)
        {
            long next = step.Logits.argmax(-1).item<long>();
            cached.Add(next);
            step = model.Decode(tensor(new[] { next }), cache, [2L], [position++]);
        }

        var full = new List<long>(ids);
        for (int i = 0; i < newTokens; i++)
            full.Add(model.ForwardFull(tensor(full.ToArray()).unsqueeze(0), allPositions: false).Logits.argmax(-1).item<long>());

        Assert.Equal(full.Skip(ids.Length), cached);
    }
}
