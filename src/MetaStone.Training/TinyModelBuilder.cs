using System.Diagnostics;
using MetaStone.Model;
using MetaStone.Model.Checkpoints;
using MetaStone.Model.Tokenization;
using MetaStone.Reasoning;
using MetaStone.Training.Tasks;
using MetaStone.Training.Trainers;
using static TorchSharp.torch;

namespace MetaStone.Training;

/// <summary>What a full build produced and how long each phase took.</summary>
public sealed record BuildSummary(string OutputDirectory, TimeSpan PolicyTime, TimeSpan SamplingTime, TimeSpan HeadTime, TimeSpan Total,
    int SprTrajectories, int SprSteps, double SprSampleAccuracy, IReadOnlyList<string> HeadLog, long PolicyParameters, long HeadParameters);

/// <summary>
/// The whole recipe that makes <c>models/metastone-tiny</c>: task tokenizer → policy → self-sampled
/// trajectories → SPRM head, written as a Hugging Face style directory that the ordinary loader serves.
/// </summary>
public sealed class TinyModelBuilder(TrainingRecipe recipe)
{
    public static ArithmeticChainTask Task { get; } = new();

    public async Task<BuildSummary> BuildAsync(string outputDirectory, string workDirectory, Action<TrainingProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        var total = Stopwatch.StartNew();
        Directory.CreateDirectory(outputDirectory);
        Directory.CreateDirectory(workDirectory);
        File.WriteAllText(Path.Combine(workDirectory, "recipe.json"), recipe.ToJson());

        new TaskTokenizerBuilder(modelMaxLength: recipe.MaxPositions).BuildForTask(Task, outputDirectory);
        var tokenizer = QwenTokenizer.FromDirectory(outputDirectory);

        // Phase 1: policy.
        var policyClock = Stopwatch.StartNew();
        var trainer = new PolicyTrainer(recipe, tokenizer, Task);
        using var policy = trainer.Train(workDirectory, progress, cancellationToken);
        trainer.ModelConfig.Save(Path.Combine(outputDirectory, "config.json"));
        SafeTensors.Save(Path.Combine(outputDirectory, "model.safetensors"),
            policy.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach()), new Dictionary<string, string> { ["format"] = "pt" });
        policyClock.Stop();

        // Phase 2: the policy samples its own trajectories on fresh training problems.
        var samplingClock = Stopwatch.StartNew();
        var rules = new StepTokenSet(tokenizer.StepTokenIds.ToHashSet(), tokenizer.TryGetTokenId("<think>"), tokenizer.TryGetTokenId("</think>"));
        int[] eos = tokenizer.EosTokenId is int e ? [e] : [];
        var problems = Task.Generate(TaskSplits.Train, recipe.SprProblems, seed: unchecked((int)(recipe.Seed ^ 0x5EED))).ToList();
        var samples = await SprTrainer.SampleAsync(policy, tokenizer, rules, eos, problems, recipe.SprSamplesPerProblem, recipe.SprMaxNewTokens,
            recipe.Seed, progress: (done, all) => progress?.Invoke(new TrainingProgress("sampling", done, all, double.NaN, 0, 0, samplingClock.Elapsed)),
            cancellationToken: cancellationToken).ConfigureAwait(false);
        var prompts = problems.Select(p => tokenizer.Encode(TaskChatFormat.GenerationPrompt(p.Prompt))).ToList();
        using var features = SprTrainer.StepFeatures(policy, prompts, samples);
        samplingClock.Stop();

        // Phase 3: the head.
        var headClock = Stopwatch.StartNew();
        manual_seed(recipe.Seed);
        using var head = new SprmHead(recipe.HiddenSize, CPU);
        var log = new SprTrainer(recipe, tokenizer, rules, eos).TrainHead(head, features, samples, progress);
        SafeTensors.Save(Path.Combine(outputDirectory, ReflectiveModel.HeadSafetensorsName), head.StateDict(),
            new Dictionary<string, string> { ["format"] = "pt" });
        File.WriteAllLines(Path.Combine(workDirectory, "sprm-training.log"), log);
        headClock.Stop();

        return new BuildSummary(outputDirectory, policyClock.Elapsed, samplingClock.Elapsed, headClock.Elapsed, total.Elapsed,
            samples.Count, (int)features.shape[0], samples.Count(s => s.Correct) / (double)Math.Max(1, samples.Count), log,
            policy.parameters().Sum(p => p.numel()), head.ParameterCount);
    }
}
