using MetaStone.Model;
using MetaStone.Model.Tokenization;
using MetaStone.Training.Tasks;
using MetaStone.Training.Trainers;
using static TorchSharp.torch;

namespace MetaStone.Training.Tests;

public sealed class SprLossTests
{
    [Fact]
    public void OnlyStepsWhosePredictionAgreesWithTheLabelCount()
    {
        // logits: +2 (y=1 agree), -1 (y=1 disagree), -3 (y=0 agree), +0.5 (y=0 disagree)
        using var logits = tensor(new float[] { 2f, -1f, -3f, 0.5f });
        using var labels = tensor(new float[] { 1f, 1f, 0f, 0f });
        var (loss, weights) = SprLoss.Compute(logits, labels);
        var w = weights.data<float>().ToArray();
        Assert.Equal(0f, w[1]);
        Assert.Equal(0f, w[3]);
        // kept: one positive, one negative → counts (1+1, 1+1): w+ = 1.5·2/4 = 0.75, w- = 2/4 = 0.5
        Assert.Equal(0.75f, w[0], 5);
        Assert.Equal(0.5f, w[2], 5);
        double bcePos = Math.Log(1 + Math.Exp(-2)), bceNeg = Math.Log(1 + Math.Exp(-3));
        double expected = (0.75 * bcePos + 0.5 * bceNeg) / (1.25 + 1e-5);
        Assert.Equal(expected, loss.item<float>(), 5);
    }

    [Fact]
    public void ClassBalancingFavoursTheRareClass()
    {
        // Three kept negatives, one kept positive: the positive weighs 1.5·4/6 = 1.0, each negative 2/6.
        using var logits = tensor(new float[] { 1f, -1f, -2f, -3f });
        using var labels = tensor(new float[] { 1f, 0f, 0f, 0f });
        var (_, weights) = SprLoss.Compute(logits, labels);
        var w = weights.data<float>().ToArray();
        Assert.Equal(1.0f, w[0], 5);
        Assert.All(w.Skip(1), x => Assert.Equal(2f / 6f, x, 5));
    }

    [Fact]
    public void InvalidStepsAreExcludedAndNothingKeptGivesZeroLoss()
    {
        using var logits = tensor(new float[] { 2f, -2f });
        using var labels = tensor(new float[] { 1f, 0f });
        using var valid = tensor(new[] { false, false });
        var (loss, weights) = SprLoss.Compute(logits, labels, valid);
        Assert.Equal(0f, weights.sum().item<float>());
        Assert.Equal(0f, loss.item<float>());
    }

    [Fact]
    public void GradientFlowsOnlyThroughKeptSteps()
    {
        using var logits = tensor(new float[] { 2f, -1f }, requires_grad: true);
        using var labels = tensor(new float[] { 1f, 1f });
        var (loss, _) = SprLoss.Compute(logits, labels);
        loss.backward();
        var g = logits.grad!.data<float>().ToArray();
        Assert.True(g[0] < 0);   // pushes the agreeing positive further up
        Assert.Equal(0f, g[1]);  // the disagreeing step is filtered out
    }
}

public sealed class PolicyTrainerTests
{
    private static readonly TrainingRecipe Tiny = TrainingRecipe.Smoke with
    {
        HiddenSize = 32, Layers = 1, Heads = 2, KvHeads = 1, IntermediateSize = 64,
        PolicySteps = 24, BatchSize = 16, WarmupSteps = 4, CheckpointEvery = 12, LearningRate = 3e-3,
    };

    private static QwenTokenizer BuildTokenizer(string dir)
    {
        new TaskTokenizerBuilder().BuildForTask(new TaskSuite(), dir, corpusProblems: 300);
        return QwenTokenizer.FromDirectory(dir);
    }

    [Fact]
    public void TrainingLowersTheLossAndResumingReproducesAnUninterruptedRun()
    {
        using var temp = new TempDirectory();
        var tokenizer = BuildTokenizer(temp.Path);
        var task = new TaskSuite();

        var losses = new List<double>();
        using var straight = new PolicyTrainer(Tiny, tokenizer, task).Train(Path.Combine(temp.Path, "a"), p => losses.Add(p.Loss));
        Assert.True(losses[^1] < losses[0] * 0.9, $"loss {losses[0]:F3} → {losses[^1]:F3}");

        // Interrupted right after the first checkpoint (step 12 of 24), as a crash would, then resumed.
        using var interrupt = new CancellationTokenSource();
        Assert.ThrowsAny<OperationCanceledException>(() =>
            new PolicyTrainer(Tiny, tokenizer, task).Train(Path.Combine(temp.Path, "b"), p => { if (p.Step == 12) interrupt.Cancel(); }, interrupt.Token));
        using var resumed = new PolicyTrainer(Tiny, tokenizer, task).Train(Path.Combine(temp.Path, "b"));
        var a = straight.state_dict();
        var b = resumed.state_dict();
        foreach (var (name, t) in a)
            Assert.True(t.allclose(b[name], rtol: 1e-5, atol: 1e-6), $"parameter {name} differs after resume by {(t - b[name]).abs().max().item<float>()} (norm {t.abs().max().item<float>()})");
    }

    [Fact]
    public void BatchesMaskThePromptAndPadding()
    {
        using var temp = new TempDirectory();
        var tokenizer = BuildTokenizer(temp.Path);
        var trainer = new PolicyTrainer(Tiny, tokenizer, new TaskSuite());
        var problems = new TaskSuite().Generate(TaskSplits.Train, 3, 5);
        var (inputs, targets, _) = trainer.MakeBatch(problems, tokenizer.GetTokenId("<|endoftext|>"));
        var t = targets.data<long>().ToArray();
        long width = targets.shape[1];
        for (int b = 0; b < 3; b++)
        {
            var (prompt, response) = trainer.Encode(problems[b]);
            var row = t.Skip((int)(b * width)).Take((int)width).ToArray();
            Assert.All(row.Take(prompt.Length - 1), x => Assert.Equal(-100, x));
            Assert.Equal(response, row.Skip(prompt.Length - 1).Take(response.Length).Select(x => (int)x));
            Assert.All(row.Skip(prompt.Length - 1 + response.Length), x => Assert.Equal(-100, x));
        }
        Assert.Equal(targets.shape, inputs.shape);
    }

    /// <summary>The smoke preset of <c>metastone train --smoke</c>: every phase of the real recipe (both families) end to end, and the result loads and answers.</summary>
    [Fact]
    public async Task SmokeRecipeBuildsAModelTheOrdinaryLoaderServes()
    {
        using var temp = new TempDirectory();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var summary = await new TinyModelBuilder(TrainingRecipe.Smoke).BuildAsync(Path.Combine(temp.Path, "model"), Path.Combine(temp.Path, "work"));
        Assert.True(summary.SprTrajectories > 0 && summary.SprSteps > 0, $"{summary.SprTrajectories} trajectories, {summary.SprSteps} steps");
        Assert.Contains(summary.DevFamilies, f => f.Family == TaskFamily.Search);
        Assert.Contains(summary.DevFamilies, f => f.Family == TaskFamily.Chain);
        using var model = ReflectiveModel.Load(Path.Combine(temp.Path, "model"), new ModelLoadOptions { MaxBatch = 16, MaxSequenceLength = 256 });
        var report = await TtsEvaluator.EvaluateAsync(model, TtsEvaluator.TestProblems(2, seed: 3), [1, 2], seed: 1,
            new MetaStone.Model.Generation.SamplingOptions { MaxNewTokens = 64 });
        Assert.Equal(["chain", "search"], report.Families.Select(f => f.Family));
        Assert.True(clock.Elapsed < TimeSpan.FromMinutes(5), $"the smoke recipe took {clock.Elapsed}");
    }

    [Fact]
    public void LearningRateWarmsUpThenDecays()
    {
        using var temp = new TempDirectory();
        var trainer = new PolicyTrainer(Tiny with { PolicySteps = 100, WarmupSteps = 10 }, BuildTokenizer(temp.Path), new TaskSuite());
        Assert.True(trainer.LearningRateAt(0) < trainer.LearningRateAt(9));
        Assert.Equal(Tiny.LearningRate, trainer.LearningRateAt(9), 9);
        Assert.True(trainer.LearningRateAt(50) < trainer.LearningRateAt(10));
        Assert.Equal(Tiny.MinLearningRate, trainer.LearningRateAt(99), 4);
    }
}

internal sealed class TempDirectory : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("metastone-test-").FullName;
    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}
