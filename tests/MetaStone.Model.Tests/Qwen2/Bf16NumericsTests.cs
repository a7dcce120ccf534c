using MetaStone.Model.Checkpoints;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MetaStone.Model.Tests.Qwen2;

/// <summary>
/// The bf16 path against a reference that uses the same bf16-rounded weights but computes in fp32 (our fp32 path,
/// which matches the float64 reference to 1e-7): what is left is the error of computing in bf16 (issue 13).
/// </summary>
/// <remarks>
/// Issue 13 asks for ≤ 5e-4 (llama.cpp's figure on a random 0.5B-shape checkpoint, whose distributions are flat). The
/// tiny fixtures are far more peaked (logits up to 12 and 48), and there even llama.cpp's own semantics — activations
/// rounded to bf16 at every matmul input, fp32 accumulation and output, fp32 keys/values — measured 5.4e-3 and 1.1e-2
/// (emulated in our model with fp32 matmuls on bf16-rounded inputs). Measured on these fixtures: 1.15e-2 / 2.33e-2 before
/// the mixed-precision forward (bf16 residual stream, bf16 logits), 5.1e-3 / 2.2e-2 after. The bounds below sit just
/// above the latter: they catch a regression to the old path, not the 5e-4 target, which bf16 activations cannot reach
/// here. (On a Hugging-Face-initialised model both paths are near 1e-6: an absolute |Δp| says nothing on flat
/// distributions.)
/// </remarks>
public sealed class Bf16NumericsTests(ITestOutputHelper output)
{

    /// <summary>The fixture's weights rounded to bf16, loaded into a model of <paramref name="dtype"/>.</summary>
    internal static Qwen2ForCausalLM LoadBf16RoundedModel(string fixture, ScalarType dtype)
    {
        var dir = TestPaths.Fixture(fixture);
        var config = Qwen2Config.Load(Path.Combine(dir, "config.json"));
        var model = new Qwen2ForCausalLM(config, dtype, CPU);
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
    [InlineData("qwen2-tiny-random", 6e-3)]
    [InlineData("qwen2-tiny-random-tied", 2.3e-2)]
    public void Bf16TopFiveProbabilitiesMatchTheBf16RoundedWeightsReference(string fixture, double tolerance)
    {
        using var reference = LoadBf16RoundedModel(fixture, ScalarType.Float32);
        using var bf16 = LoadBf16RoundedModel(fixture, ScalarType.BFloat16);
        var (ids, _, _, greedy) = ReferenceForwardTests.LoadReference(fixture);
        // The fixture's prompt, and the prompt followed by its greedy continuation (longer context, other tokens).
        double worst = Math.Max(
            WorstTopFiveProbabilityError(reference, bf16, ids),
            WorstTopFiveProbabilityError(reference, bf16, [.. ids, .. greedy]));
        output.WriteLine($"{fixture}: worst top-5 |Δp| = {worst:E2}");
        Assert.True(worst <= tolerance, $"{fixture}: bf16 top-5 |Δp| = {worst:E2} > {tolerance:E1}");
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
        using var cache = new KvCache(model.Config, slots: 3, maxLength: ids.Length + newTokens + 1, CPU, model.Dtype);
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
