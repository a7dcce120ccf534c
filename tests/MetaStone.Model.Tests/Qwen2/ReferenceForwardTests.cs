using System.Text.Json.Nodes;
using MetaStone.Model.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model.Tests.Qwen2;

/// <summary>
/// The forward pass against reference outputs of an independent float64 NumPy implementation
/// (tests/fixtures/qwen2-tiny-random*/reference.json).
/// </summary>
public sealed class ReferenceForwardTests
{
    internal static Qwen2ForCausalLM LoadFixtureModel(string name, ScalarType dtype = ScalarType.Float32)
    {
        var dir = TestPaths.Fixture(name);
        var config = Qwen2Config.Load(Path.Combine(dir, "config.json"));
        var model = new Qwen2ForCausalLM(config, dtype, CPU);
        model.eval();
        var tensors = CheckpointDirectory.Load(dir);
        model.LoadWeights(tensors, _ => Path.Combine(dir, "model.safetensors"));
        foreach (var t in tensors.Values) t.Dispose();
        return model;
    }

    internal static (long[] Ids, float[][] Logits, float[][] Hidden, long[] Greedy) LoadReference(string name)
    {
        var json = JsonNode.Parse(File.ReadAllText(TestPaths.Fixture(name, "reference.json")))!;
        long[] ids = json["input_ids"]!.AsArray().Select(n => n!.GetValue<long>()).ToArray();
        float[][] Rows(string key) => json[key]!.AsArray().Select(r => r!.AsArray().Select(v => (float)v!.GetValue<double>()).ToArray()).ToArray();
        long[] greedy = json["greedy_next_8"]!.AsArray().Select(n => n!.GetValue<long>()).ToArray();
        return (ids, Rows("logits"), Rows("hidden_states_minus_2"), greedy);
    }

    [Theory]
    [InlineData("qwen2-tiny-random")]
    [InlineData("qwen2-tiny-random-tied")]
    public void FullForwardMatchesReferenceLogitsAndSprmFeatures(string fixture)
    {
        using var model = LoadFixtureModel(fixture);
        var (ids, refLogits, refHidden, _) = LoadReference(fixture);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var output = model.ForwardFull(tensor(ids).unsqueeze(0));
        var logits = output.Logits[0];
        var hidden = output.SprmFeatures[0].to_type(ScalarType.Float32);
        for (int t = 0; t < ids.Length; t++)
        {
            AssertClose(refLogits[t], logits[t].data<float>().ToArray(), 1e-4, $"logits[{t}]");
            AssertClose(refHidden[t], hidden[t].data<float>().ToArray(), 1e-4, $"hidden_states[-2][{t}]");
        }
    }

    [Theory]
    [InlineData("qwen2-tiny-random")]
    [InlineData("qwen2-tiny-random-tied")]
    public void GreedyContinuationMatchesReferenceExactly(string fixture)
    {
        using var model = LoadFixtureModel(fixture);
        var (ids, _, _, greedy) = LoadReference(fixture);
        using var cache = new KvCache(model.Config, slots: 2, maxLength: 64, CPU, model.KvDtype);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var output = model.Prefill(tensor(ids).unsqueeze(0), cache, slot: 1, start: 0);
        var produced = new List<long>();
        long position = ids.Length;
        for (int i = 0; i < greedy.Length; i++)
        {
            long next = output.Logits.argmax(-1).item<long>();
            produced.Add(next);
            output = model.Decode(tensor(new[] { next }), cache, [1L], [position++]);
        }
        Assert.Equal(greedy, produced);
    }

    internal static void AssertClose(float[] expected, float[] actual, double tolerance, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        double worst = 0;
        int worstAt = -1;
        for (int i = 0; i < expected.Length; i++)
        {
            double d = Math.Abs(expected[i] - actual[i]);
            if (d > worst) { worst = d; worstAt = i; }
        }
        Assert.True(worst <= tolerance, $"{what}: max abs diff {worst:E3} at {worstAt} (expected {expected[Math.Max(worstAt, 0)]}, got {actual[Math.Max(worstAt, 0)]})");
    }
}
