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

    /// <summary>
    /// The search family: the SPRM head verifies. On the full test split (500 problems × 32, the model card) SPRM Best-of-8 is
    /// 80.2 % against pass@1 35.8 % (+44 points); on this fixed slice of 48 problems we require +25 points, well outside its noise.
    /// </summary>
    [Fact]
    public async Task Search_family_SPRM_best_of_eight_beats_random_pick_and_a_single_sample()
    {
        using var model = ReflectiveModel.Load(ModelDir, new ModelLoadOptions { MaxBatch = 128, MaxSequenceLength = 256 });
        var problems = TtsEvaluator.TestProblems(48, seed: 7, TaskFamily.Search);
        var report = (await TtsEvaluator.EvaluateAsync(model, problems, [1, 8], seed: 3, new SamplingOptions { MaxNewTokens = 160 })).Family("search")!;
        var at8 = report.ByK.Single(r => r.K == 8);
        string figures = $"pass@1 {report.PassAt1:P1}, random@8 {at8.RandomPick:P1}, majority@8 {at8.MajorityVote:P1}, SPRM Best-of-8 {at8.SprmBestOfN:P1}, AUROC {report.SprmAuroc:F3}, ties {report.TiesAtTop:P1}";
        Assert.True(at8.SprmBestOfN >= at8.RandomPick + 0.25, figures);
        Assert.True(at8.SprmBestOfN >= report.PassAt1 + 0.25, figures);
        Assert.True(at8.SprmBestOfN >= at8.MajorityVote + 0.25, figures);
        Assert.True(report.SprmAuroc > 0.9, figures);
    }

    /// <summary>
    /// The README's question: one candidate of eight finds the target, the rest give up. Majority vote would answer "none";
    /// the best-scored candidate is the right one, by a wide margin.
    /// </summary>
    [Fact]
    public async Task On_a_fixed_search_question_the_best_scored_candidate_is_right_and_clearly_ahead()
    {
        const string prompt = "Reach 81 with 5, 16, 13 using + - * /, each number at most once.";
        using var model = ReflectiveModel.Load(ModelDir, new ModelLoadOptions { MaxBatch = 8, MaxSequenceLength = 256 });
        var trajectories = await model.Engine.GenerateAsync(new GenerationRequest
        {
            PromptIds = model.EncodePrompt(prompt), Seeds = [.. Enumerable.Range(0, 8).Select(i => (long)i)], Sampling = new SamplingOptions { MaxNewTokens = 160 },
        });
        var spec = CountdownTask.TryParsePrompt("readme", prompt)!.Spec.ToString();
        var candidates = trajectories.Select(t => model.Describe(t)).Select(d => (d.Score, Correct: AnswerGrader.IsCorrect(d.Text, spec), d.Text)).ToList();
        string all = string.Join("\n", candidates.Select(c => $"{c.Score:F4} {(c.Correct ? "right" : "wrong")}"));
        Assert.Contains(candidates, c => !c.Correct);
        Assert.Contains(candidates, c => c.Correct);
        var best = candidates.MaxBy(c => c.Score);
        Assert.True(best.Correct, all);
        Assert.True(best.Score > 10 * candidates.Where(c => !c.Correct).Max(c => c.Score), all);
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
