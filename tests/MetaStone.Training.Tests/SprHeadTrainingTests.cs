using MetaStone.Model;
using MetaStone.Model.Tokenization;
using MetaStone.Reasoning;
using MetaStone.Training.Trainers;
using static TorchSharp.torch;

namespace MetaStone.Training.Tests;

/// <summary>Head training on synthetic step features: dev-based epoch selection and the standardization fold.</summary>
public sealed class SprHeadTrainingTests
{
    /// <summary>
    /// Problems × samples trajectories of 2–4 steps; channel 0 carries the trajectory's correctness (plus noise), every
    /// channel has a wildly different scale and offset (as a raw residual stream does).
    /// </summary>
    private static SprData Synthetic(int problems, int samples, int seed)
    {
        var rng = new Random(seed);
        var infos = new List<SprTrajectoryInfo>();
        var rows = new List<float>();
        const int c = 16;
        for (int p = 0; p < problems; p++)
            for (int s = 0; s < samples; s++)
            {
                bool correct = rng.NextDouble() < 0.35;
                int steps = rng.Next(2, 5);
                infos.Add(new SprTrajectoryInfo(p, s, correct, Finished: true, steps, correct ? "1" : $"{2 + s}", ""));
                for (int k = 0; k < steps; k++)
                    for (int ch = 0; ch < c; ch++)
                    {
                        double v = rng.NextDouble() * 2 - 1 + (ch == 0 && correct ? 1.5 : 0);
                        rows.Add((float)(v * (1 + 200 * ch) + 50 * ch));
                    }
            }
        return new SprData { Features = tensor(rows.ToArray()).view(-1, c), Trajectories = infos };
    }

    [Fact]
    public void TrainsOnStandardizedFeaturesFoldsThemAndKeepsTheBestDevEpoch()
    {
        using var train = Synthetic(150, 4, seed: 1);
        using var dev = Synthetic(60, 4, seed: 2);
        var recipe = new TrainingRecipe
        {
            HiddenSize = 16, SprEpochs = 6, SprBatchSize = 64, SprLearningRate = 3e-3, SprMinLearningRate = 3e-4,
            SprStandardizeFeatures = true, SprSelectBy = "dev-auroc", Seed = 5,
        };
        manual_seed(5);
        using var head = new SprmHead(16, CPU);
        var trainer = new SprTrainer(recipe, null!, new StepTokenSet(new HashSet<int> { 1 }, null, null), []);
        var result = trainer.TrainHead(head, train, dev);

        Assert.Equal(recipe.SprEpochs + 2, result.Log.Count); // epochs, the selection line, the fold line
        Assert.Contains("selected epoch", result.Log[^2]);
        Assert.InRange(result.SelectedEpoch, 1, recipe.SprEpochs);
        Assert.True(result.DevAuroc > 0.9, string.Join('\n', result.Log));
        // The shipped head reads raw features: its dev AUROC on them is the selected epoch's (the fold is exact).
        var raw = SprTrainer.DevStats(head, dev.Features, dev.Trajectories, dev.Owner);
        Assert.Equal(result.DevAuroc, raw.Auroc, 3);
        Assert.True(raw.BestOfN > raw.Random, $"Best-of-4 {raw.BestOfN:P1} vs random {raw.Random:P1}");
    }

    [Fact]
    public void RawFeaturesAndLastEpochLeaveTheCallersTensorsUsable()
    {
        using var train = Synthetic(40, 4, seed: 3);
        using var dev = Synthetic(20, 4, seed: 4);
        var recipe = new TrainingRecipe { HiddenSize = 16, SprEpochs = 2, SprBatchSize = 64, SprStandardizeFeatures = false, SprSelectBy = "last" };
        using var head = new SprmHead(16, CPU);
        var trainer = new SprTrainer(recipe, null!, new StepTokenSet(new HashSet<int> { 1 }, null, null), []);
        var result = trainer.TrainHead(head, train, dev);
        Assert.Equal(2, result.SelectedEpoch);
        // Disposed tensors would throw here.
        Assert.Equal(train.Trajectories.Count, SprTrainer.Scores(head, train.Features, train.Trajectories.Count, train.Owner).Count);
        Assert.Equal(dev.Trajectories.Count, SprTrainer.Scores(head, dev.Features, dev.Trajectories.Count, dev.Owner).Count);
        Assert.Throws<ArgumentException>(() => new SprTrainer(recipe with { SprSelectBy = "best" }, null!, new StepTokenSet(new HashSet<int> { 1 }, null, null), [])
            .TrainHead(head, train, dev));
    }
}
