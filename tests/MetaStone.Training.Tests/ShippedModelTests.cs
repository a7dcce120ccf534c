using MetaStone.Model;
using MetaStone.Model.Generation;
using MetaStone.Reasoning;
using MetaStone.Training;
using MetaStone.Training.Tasks;

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

    /// <summary>The chain family: majority vote (its right tool) beats a single sample at k = 8, and the head still beats chance.</summary>
    [Fact]
    public async Task Chain_family_majority_of_eight_beats_a_single_sample()
    {
        using var model = ReflectiveModel.Load(ModelDir, new ModelLoadOptions { MaxBatch = 128, MaxSequenceLength = 256 });
        Assert.True(model.Engine.CanScore);
        var problems = TtsEvaluator.TestProblems(48, seed: 7, TaskFamily.Chain);
        var report = (await TtsEvaluator.EvaluateAsync(model, problems, [1, 8], seed: 3, new SamplingOptions { MaxNewTokens = 200 })).Family("chain")!;
        var at8 = report.ByK.Single(r => r.K == 8);
        string figures = $"pass@1 {report.PassAt1:P1}, majority@8 {at8.MajorityVote:P1}, weighted@8 {at8.SprmWeightedVote:P1}, SPRM Best-of-8 {at8.SprmBestOfN:P1}, AUROC {report.SprmAuroc:F3}";
        Assert.True(at8.MajorityVote > report.PassAt1, figures);
        Assert.True(report.SprmAuroc > 0.55, figures);
        Assert.True(report.PassAt1 is > 0.1 and < 0.9, figures);
    }

    /// <summary>`metastone eval` with a fixed seed gives the same figures twice (all requests enter the engine in one go).</summary>
    [Fact]
    public async Task Evaluation_with_a_fixed_seed_is_reproducible()
    {
        var problems = TtsEvaluator.TestProblems(6, seed: 11);
        var options = new System.Text.Json.JsonSerializerOptions { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals };
        string Run(EvalReport r) => System.Text.Json.JsonSerializer.Serialize(r.Families, options) + string.Join(";", r.Samples.SelectMany(s => s.Samples).Select(s => s.Text + s.Candidate.Score.ToString("R")));
        string first, second;
        using (var model = ReflectiveModel.Load(ModelDir, new ModelLoadOptions { MaxBatch = 64, MaxSequenceLength = 256 }))
            first = Run(await TtsEvaluator.EvaluateAsync(model, problems, [1, 2, 4, 8], seed: 5, new SamplingOptions { MaxNewTokens = 220 }));
        using (var model = ReflectiveModel.Load(ModelDir, new ModelLoadOptions { MaxBatch = 64, MaxSequenceLength = 256 }))
            second = Run(await TtsEvaluator.EvaluateAsync(model, problems, [1, 2, 4, 8], seed: 5, new SamplingOptions { MaxNewTokens = 220 }));
        Assert.Equal(first, second);
    }

    /// <summary>A question of neither family still gets an answer: the model tries, nothing throws.</summary>
    [Fact]
    public async Task A_prompt_of_an_unknown_family_still_gets_an_answer()
    {
        using var model = ReflectiveModel.Load(ModelDir, new ModelLoadOptions { MaxBatch = 8, MaxSequenceLength = 256 });
        var trajectories = await model.Engine.GenerateAsync(new GenerationRequest
        {
            PromptIds = model.EncodePrompt("What is the capital of France?"),
            Seeds = [1, 2],
            Sampling = new SamplingOptions { MaxNewTokens = 120 },
        });
        Assert.Equal(2, trajectories.Count);
        Assert.All(trajectories, t => Assert.NotEmpty(t.ResponseIds));
        Assert.All(trajectories.Select(t => model.Describe(t)), d => Assert.InRange(d.Score, 0.0, 1.0));
    }
}
