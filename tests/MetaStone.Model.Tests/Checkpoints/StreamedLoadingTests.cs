using MetaStone.Model.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model.Tests.Checkpoints;

/// <summary>Streaming safetensors straight into the parameters loads exactly what the dictionary path loads.</summary>
public sealed class StreamedLoadingTests
{
    private static void AssertSameParameters(Qwen2ForCausalLM expected, Qwen2ForCausalLM actual)
    {
        var reference = expected.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in actual.named_parameters())
            TensorAssert.BitwiseEqual(reference[name], p, name);
    }

    [Theory]
    [InlineData("qwen2-tiny-random", ScalarType.Float32)]
    [InlineData("qwen2-tiny-random-tied", ScalarType.Float32)]
    [InlineData("qwen2-tiny-random", ScalarType.BFloat16)]   // fp32 file into bf16 parameters: the converting chunk path
    public void StreamedLoadEqualsTheDictionaryLoad(string fixture, ScalarType dtype)
    {
        var dir = TestPaths.Fixture(fixture);
        var config = Qwen2Config.Load(Path.Combine(dir, "config.json"));
        using var viaDictionary = LoadViaDictionary(dir, config, dtype);
        using var streamed = new Qwen2ForCausalLM(config, dtype, CPU, ropePositions: null, initializeWeights: false);
        streamed.LoadWeights(CheckpointDirectory.ReadTensorLocations(dir));
        AssertSameParameters(viaDictionary, streamed);
    }

    /// <summary>A model built without default initialisation and streamed from the checkpoint (how ReflectiveModel loads)
    /// computes the float64 reference's logits: the forward uses the loaded tensors and nothing left uninitialised.</summary>
    [Theory]
    [InlineData("qwen2-tiny-random")]
    [InlineData("qwen2-tiny-random-tied")]
    public void UninitialisedThenStreamedModelMatchesTheReferenceForward(string fixture)
    {
        var dir = TestPaths.Fixture(fixture);
        using var model = new Qwen2ForCausalLM(Qwen2Config.Load(Path.Combine(dir, "config.json")), ScalarType.Float32, CPU, ropePositions: null, initializeWeights: false);
        model.eval();
        model.LoadWeights(CheckpointDirectory.ReadTensorLocations(dir));
        var (ids, refLogits, _, _) = Qwen2.ReferenceForwardTests.LoadReference(fixture);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var logits = model.ForwardFull(tensor(ids).unsqueeze(0)).Logits[0];
        for (int t = 0; t < ids.Length; t++)
            Qwen2.ReferenceForwardTests.AssertClose(refLogits[t], logits[t].data<float>().ToArray(), 1e-4, $"logits[{t}]");
    }

    private static Qwen2ForCausalLM LoadViaDictionary(string dir, Qwen2Config config, ScalarType dtype)
    {
        var model = new Qwen2ForCausalLM(config, dtype, CPU);
        var tensors = CheckpointDirectory.Load(dir);
        try { model.LoadWeights(tensors, _ => dir); }
        finally { TensorAssert.DisposeAll(tensors.Values); }
        return model;
    }

    [Fact]
    public void StreamedLoadReadsShardsAndReportsMismatchesBeforeReadingData()
    {
        var fixture = TestPaths.Fixture("qwen2-tiny-random");
        var config = Qwen2Config.Load(Path.Combine(fixture, "config.json"));
        using var dir = new TempDirectory();
        var tensors = CheckpointDirectory.Load(fixture);
        try
        {
            // bf16 shards of ~64 KB: several files, and a dtype other than the fp32 model's.
            var bf16 = tensors.ToDictionary(kv => kv.Key, kv => kv.Value.to_type(ScalarType.BFloat16));
            CheckpointDirectory.SaveSharded(dir.Path, bf16, maxShardBytes: 64 * 1024);
            TensorAssert.DisposeAll(bf16.Values);
            Assert.True(Directory.GetFiles(dir.Path, "model-*-of-*.safetensors").Length >= 2);

            using var streamed = new Qwen2ForCausalLM(config, ScalarType.Float32, CPU);
            streamed.LoadWeights(CheckpointDirectory.ReadTensorLocations(dir.Path));
            foreach (var (name, p) in streamed.named_parameters())
                TensorAssert.BitwiseEqual(tensors[name].to_type(ScalarType.BFloat16).to_type(ScalarType.Float32), p, name);

            // A config that does not match the files: the error names the tensor and its file, as the dictionary path does.
            using var wrong = new Qwen2ForCausalLM(config with { IntermediateSize = 128 }, ScalarType.Float32, CPU);
            var e = Assert.Throws<InvalidDataException>(() => wrong.LoadWeights(CheckpointDirectory.ReadTensorLocations(dir.Path)));
            Assert.Contains("model.layers.0.mlp.down_proj.weight", e.Message);
            Assert.Contains(".safetensors has shape [64,160], expected [64,128]", e.Message);
        }
        finally
        {
            TensorAssert.DisposeAll(tensors.Values);
        }
    }
}
