using MetaStone.Model.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model.Tests.Qwen2;

/// <summary>
/// q/k/v and gate/up run as one matmul each over a fused weight whose row blocks are the Hugging Face parameters (views).
/// Inference reads the fused storage; with autograd recording the parts are concatenated so gradients reach them.
/// </summary>
public sealed class FusedProjectionTests
{
    /// <summary>Writing a part parameter (as loading and optimisers do) writes its rows of the fused weight, and only those.</summary>
    [Fact]
    public void PartParametersAreRowViewsOfTheFusedWeights()
    {
        var config = Qwen2Config.Load(TestPaths.Fixture("qwen2-tiny-random", "config.json"));
        using var model = new Qwen2ForCausalLM(config, ScalarType.Float32, CPU, ropePositions: 64, initializeWeights: false);
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        long q = config.NumAttentionHeads * config.HeadDim, kv = config.NumKeyValueHeads * config.HeadDim, ffn = config.IntermediateSize;
        using var scope = NewDisposeScope();
        using (no_grad())
        {
            parameters["model.layers.1.self_attn.q_proj.weight"].FillWith(1);
            parameters["model.layers.1.self_attn.k_proj.weight"].FillWith(2);
            parameters["model.layers.1.self_attn.v_proj.weight"].FillWith(3);
            parameters["model.layers.1.self_attn.q_proj.bias"].FillWith(4);
            parameters["model.layers.1.self_attn.k_proj.bias"].FillWith(5);
            parameters["model.layers.1.self_attn.v_proj.bias"].FillWith(6);
            parameters["model.layers.1.mlp.gate_proj.weight"].FillWith(7);
            parameters["model.layers.1.mlp.up_proj.weight"].FillWith(8);
        }
        var layer = model.Body.Layers[1];
        AssertAll(layer.Attention.QkvWeight.narrow(0, 0, q), 1, "q rows");
        AssertAll(layer.Attention.QkvWeight.narrow(0, q, kv), 2, "k rows");
        AssertAll(layer.Attention.QkvWeight.narrow(0, q + kv, kv), 3, "v rows");
        AssertAll(layer.Attention.QkvBias!.narrow(0, 0, q), 4, "q bias");
        AssertAll(layer.Attention.QkvBias!.narrow(0, q, kv), 5, "k bias");
        AssertAll(layer.Attention.QkvBias!.narrow(0, q + kv, kv), 6, "v bias");
        AssertAll(layer.Mlp.GateUpWeight.narrow(0, 0, ffn), 7, "gate rows");
        AssertAll(layer.Mlp.GateUpWeight.narrow(0, ffn, ffn), 8, "up rows");
        Assert.Equal([q + 2 * kv, config.HiddenSize], layer.Attention.QkvWeight.shape);
        Assert.Equal([2 * ffn, config.HiddenSize], layer.Mlp.GateUpWeight.shape);
        // The state dict keeps the Hugging Face names and shapes only (no fused tensor in it).
        Assert.DoesNotContain(model.state_dict().Keys, name => !name.StartsWith("model.", StringComparison.Ordinal) && name != "lm_head.weight");
        Assert.Equal([kv, config.HiddenSize], model.state_dict()["model.layers.1.self_attn.k_proj.weight"].shape);
    }

    /// <summary>The autograd path (concatenated parts) computes exactly what the inference path (fused storage) computes, and
    /// its gradients reach the q/k/v and gate/up parameters.</summary>
    [Fact]
    public void AutogradPathMatchesTheFusedPathBitwiseAndTrainsTheParts()
    {
        var dir = TestPaths.Fixture("qwen2-tiny-random");
        using var model = new Qwen2ForCausalLM(Qwen2Config.Load(Path.Combine(dir, "config.json")), ScalarType.Float32, CPU, ropePositions: null, initializeWeights: false);
        model.LoadWeights(CheckpointDirectory.ReadTensorLocations(dir));
        var (ids, _, _, _) = ReferenceForwardTests.LoadReference("qwen2-tiny-random");
        using var scope = NewDisposeScope();
        Tensor inference, inferenceInHostKernels;
        using (no_grad())
        {
            // Training always runs torch's matmuls: compare with the inference path on the same kernels.
            model.UseHostKernels = false;
            inference = model.ForwardFull(tensor(ids).unsqueeze(0)).Logits;
            model.UseHostKernels = true;
            inferenceInHostKernels = model.ForwardFull(tensor(ids).unsqueeze(0)).Logits;
        }
        var training = model.ForwardFull(tensor(ids).unsqueeze(0)).Logits;
        Assert.True(training.requires_grad);
        Assert.Equal(inference.data<float>().ToArray(), training.detach().data<float>().ToArray());
        // The host kernel sums in another order: the same logits to fp32 rounding.
        Assert.True(inferenceInHostKernels.allclose(training.detach(), rtol: 1e-5, atol: 1e-5), "host-kernel inference differs from the autograd path");

        training.sum().backward();
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var name in new[] { "q_proj.weight", "k_proj.weight", "v_proj.weight", "v_proj.bias" })
            AssertNonZeroGradient(parameters[$"model.layers.0.self_attn.{name}"], name);
        foreach (var name in new[] { "gate_proj.weight", "up_proj.weight" })
            AssertNonZeroGradient(parameters[$"model.layers.0.mlp.{name}"], name);
    }

    private static void AssertAll(Tensor t, float value, string what) =>
        Assert.True(t.contiguous().data<float>().All(v => v == value), $"{what}: expected every element {value}");

    private static void AssertNonZeroGradient(Tensor p, string name)
    {
        var grad = p.grad;
        Assert.True(grad is not null, $"{name} has no gradient");
        Assert.True(grad!.abs().sum().item<float>() > 0, $"{name}'s gradient is zero");
    }
}
