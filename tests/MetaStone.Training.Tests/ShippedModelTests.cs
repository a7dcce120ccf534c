using MetaStone.Model;
using MetaStone.Model.Generation;
using MetaStone.Training;

namespace MetaStone.Training.Tests;

/// <summary>The checked-in tiny model (models/metastone-tiny): it loads through the ordinary loader and test-time scaling works on it.</summary>
public sealed class ShippedModelTests
{
    private static string ModelDir => Path.Combine(TestPaths.RepoRoot, "models", "metastone-tiny");

    [Fact]
    public void ShippedModelIsCompleteAndSmall()
    {
        foreach (var file in new[] { "config.json", "model.safetensors", "score_module.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md" })
            Assert.True(File.Exists(Path.Combine(ModelDir, file)), $"models/metastone-tiny/{file} is missing");
        long bytes = Directory.EnumerateFiles(ModelDir).Sum(f => new FileInfo(f).Length);
        Assert.True(bytes < 20L * 1024 * 1024, $"models/metastone-tiny is {bytes / 1048576.0:F1} MB (limit 20 MB)");
    }

    [Fact]
    public async Task SprmBestOfEightBeatsASingleSampleOnAFixedTestSlice()
    {
        using var model = ReflectiveModel.Load(ModelDir, new ModelLoadOptions { MaxBatch = 128, MaxSequenceLength = 256 });
        Assert.True(model.Engine.CanScore);
        var problems = TtsEvaluator.TestProblems(48, seed: 7);
        var report = await TtsEvaluator.EvaluateAsync(model, problems, [1, 8], seed: 3, new SamplingOptions { MaxNewTokens = 200 });
        var at8 = report.ByK.Single(r => r.K == 8);
        Assert.True(at8.SprmBestOfN > report.PassAt1,
            $"SPRM Best-of-8 {at8.SprmBestOfN:P1} should beat pass@1 {report.PassAt1:P1} (AUROC {report.SprmAuroc:F3})");
        Assert.True(report.SprmAuroc > 0.5, $"SPRM AUROC {report.SprmAuroc:F3}");
    }
}
