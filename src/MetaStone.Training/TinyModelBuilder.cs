using System.Diagnostics;
using MetaStone.Model;
using MetaStone.Model.Checkpoints;
using MetaStone.Model.Tokenization;
using MetaStone.Reasoning;
using MetaStone.Training.Tasks;
using MetaStone.Training.Trainers;
using static TorchSharp.torch;

namespace MetaStone.Training;

/// <summary>What a build produced and how long each phase took (PolicyTime is zero for a head-only build, which reuses <see cref="PolicySource"/>).</summary>
public sealed record BuildSummary(string OutputDirectory, TimeSpan PolicyTime, TimeSpan SamplingTime, TimeSpan HeadTime, TimeSpan Total,
    int SprTrajectories, int SprSteps, double SprSampleAccuracy, IReadOnlyList<string> HeadLog, long PolicyParameters, long HeadParameters)
{
    /// <summary>Null when the policy was trained by this build; else the directory whose policy was reused (head-only).</summary>
    public string? PolicySource { get; init; }
    /// <summary>True when the sampled SPRM data (train and dev) came from the work directory's cache instead of being sampled now.</summary>
    public bool SprDataCached { get; init; }
    public int DevTrajectories { get; init; }
    public double DevSampleAccuracy { get; init; }
    public int SelectedEpoch { get; init; }
    public double DevAuroc { get; init; } = double.NaN;
    public double DevBestOfN { get; init; } = double.NaN;
    /// <summary>Dev figures per family of the selected head epoch (empty without dev problems).</summary>
    public IReadOnlyList<SprTrainer.SprFamilyDevStats> DevFamilies { get; init; } = [];
}

/// <summary>
/// The whole recipe that makes <c>models/metastone-tiny</c>: task tokenizer → policy → self-sampled
/// trajectories → SPRM head, written as a Hugging Face style directory that the ordinary loader serves.
/// <see cref="BuildHeadAsync"/> runs only the last two phases on an existing policy.
/// </summary>
public sealed class TinyModelBuilder(TrainingRecipe recipe)
{
    /// <summary>Both task families with the default options (the recipe sets the mix).</summary>
    public static TaskSuite Tasks { get; } = new();

    /// <summary>The task suite this recipe trains on.</summary>
    public TaskSuite Suite { get; } = new(searchFraction: recipe.SearchFraction);

    /// <summary>The files of a model directory that belong to the policy (everything but the head and the card).</summary>
    public static readonly string[] PolicyFiles = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"];

    public async Task<BuildSummary> BuildAsync(string outputDirectory, string workDirectory, Action<TrainingProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        var total = Stopwatch.StartNew();
        Directory.CreateDirectory(outputDirectory);
        Directory.CreateDirectory(workDirectory);
        File.WriteAllText(Path.Combine(workDirectory, "recipe.json"), recipe.ToJson());

        new TaskTokenizerBuilder(modelMaxLength: recipe.MaxPositions).BuildForTask(Suite, outputDirectory);
        var tokenizer = QwenTokenizer.FromDirectory(outputDirectory);

        // Phase 1: policy.
        var policyClock = Stopwatch.StartNew();
        var trainer = new PolicyTrainer(recipe, tokenizer, Suite);
        using var policy = trainer.Train(workDirectory, progress, cancellationToken);
        trainer.ModelConfig.Save(Path.Combine(outputDirectory, "config.json"));
        SafeTensors.Save(Path.Combine(outputDirectory, "model.safetensors"),
            policy.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach()), new Dictionary<string, string> { ["format"] = "pt" });
        policyClock.Stop();

        var summary = await HeadPhasesAsync(policy, tokenizer, outputDirectory, workDirectory, progress, cancellationToken).ConfigureAwait(false);
        return summary with { PolicyTime = policyClock.Elapsed, Total = total.Elapsed };
    }

    /// <summary>
    /// Head-only build: loads the policy (and tokenizer) of <paramref name="policyDirectory"/>, which stays unchanged, samples
    /// and trains a new SPRM head with this recipe, and writes the policy files plus the new head to <paramref name="outputDirectory"/>
    /// (which may be the same directory).
    /// </summary>
    public async Task<BuildSummary> BuildHeadAsync(string policyDirectory, string outputDirectory, string workDirectory,
        Action<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var total = Stopwatch.StartNew();
        Directory.CreateDirectory(outputDirectory);
        Directory.CreateDirectory(workDirectory);
        File.WriteAllText(Path.Combine(workDirectory, "recipe.json"), recipe.ToJson());
        if (!string.Equals(Path.GetFullPath(policyDirectory).TrimEnd('/'), Path.GetFullPath(outputDirectory).TrimEnd('/'), StringComparison.Ordinal))
            foreach (var file in PolicyFiles)
                File.Copy(Path.Combine(policyDirectory, file), Path.Combine(outputDirectory, file), overwrite: true);
        var tokenizer = QwenTokenizer.FromDirectory(outputDirectory);
        using var policy = LoadPolicy(outputDirectory, policyDirectory);
        var summary = await HeadPhasesAsync(policy, tokenizer, outputDirectory, workDirectory, progress, cancellationToken).ConfigureAwait(false);
        return summary with { Total = total.Elapsed, PolicySource = Path.GetFullPath(policyDirectory) };
    }

    private Qwen2ForCausalLM LoadPolicy(string directory, string describedAs)
    {
        var config = Qwen2Config.Load(Path.Combine(directory, "config.json"));
        if (config.HiddenSize != recipe.HiddenSize || config.NumHiddenLayers != recipe.Layers)
            throw new InvalidDataException($"{describedAs}: policy is {config.NumHiddenLayers} layers × hidden {config.HiddenSize}, the recipe says {recipe.Layers} × {recipe.HiddenSize}");
        var policy = new Qwen2ForCausalLM(config, ScalarType.Float32, CPU, ropePositions: config.MaxPositionEmbeddings);
        policy.eval();
        var tensors = SafeTensors.Load(Path.Combine(directory, "model.safetensors"));
        try { policy.LoadWeights(tensors, _ => Path.Combine(directory, "model.safetensors")); }
        finally { foreach (var t in tensors.Values) t.Dispose(); }
        return policy;
    }

    /// <summary>
    /// The gate of the recipe (see <see cref="OracleProbe"/>): samples (or loads from the work directory's cache) the same train and
    /// dev data as the head phase for the policy in <paramref name="policyDirectory"/> and trains the oracle-label probe on it.
    /// </summary>
    public async Task<IReadOnlyList<string>> ProbeAsync(string policyDirectory, string workDirectory, int epochs = 15,
        Action<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        Directory.CreateDirectory(workDirectory);
        var tokenizer = QwenTokenizer.FromDirectory(policyDirectory);
        using var policy = LoadPolicy(policyDirectory, policyDirectory);
        var (train, trainProblems, dev, devProblems) = await SamplePhaseAsync(policy, tokenizer, policyDirectory, workDirectory, progress, cancellationToken).ConfigureAwait(false);
        using (train)
        using (dev)
        {
            if (dev is null) throw new InvalidOperationException("the probe needs dev problems (SprDevProblems > 0)");
            var log = new List<string>
            {
                $"policy {policyDirectory}: train {train.Trajectories.Count} trajectories (accuracy {train.Accuracy:P1}), dev {dev.Trajectories.Count} (accuracy {dev.Accuracy:P1})",
            };
            log.AddRange(OracleProbe.Run(train, trainProblems, dev, devProblems!, recipe.HiddenSize, epochs, recipe.Seed));
            return log;
        }
    }

    private async Task<(SprData Train, IReadOnlyList<TaskProblem> TrainProblems, SprData? Dev, IReadOnlyList<TaskProblem>? DevProblems)> SamplePhaseAsync(
        Qwen2ForCausalLM policy, QwenTokenizer tokenizer, string policyDirectory, string workDirectory, Action<TrainingProgress>? progress, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var rules = tokenizer.StepRules();
        int[] eos = tokenizer.EosTokenId is int e ? [e] : [];
        string weights = Path.Combine(policyDirectory, "model.safetensors");
        var problems = Suite.Generate(TaskSplits.Train, recipe.SprProblems, seed: unchecked((int)(recipe.Seed ^ 0x5EED)));
        var train = await SprData.SampleOrLoadAsync(policy, weights, tokenizer, rules, eos, problems, "train", recipe.SprSamplesPerProblem,
            recipe.SprMaxNewTokens, recipe.Seed, workDirectory,
            (done, all) => progress?.Invoke(new TrainingProgress("sampling", done, all, double.NaN, 0, 0, clock.Elapsed)), cancellationToken).ConfigureAwait(false);
        if (recipe.SprDevProblems <= 0) return (train, problems, null, null);
        var devProblems = Suite.Generate(TaskSplits.Dev, recipe.SprDevProblems, seed: unchecked((int)(recipe.Seed ^ 0xDE7)));
        var dev = await SprData.SampleOrLoadAsync(policy, weights, tokenizer, rules, eos, devProblems, "dev", recipe.SprDevSamplesPerProblem,
            recipe.SprMaxNewTokens, recipe.Seed + 7_000_000, workDirectory,
            (done, all) => progress?.Invoke(new TrainingProgress("sampling dev", done, all, double.NaN, 0, 0, clock.Elapsed)), cancellationToken).ConfigureAwait(false);
        return (train, problems, dev, devProblems);
    }

    private async Task<BuildSummary> HeadPhasesAsync(Qwen2ForCausalLM policy, QwenTokenizer tokenizer, string outputDirectory, string workDirectory,
        Action<TrainingProgress>? progress, CancellationToken cancellationToken)
    {
        // Phase 2: the policy samples its own trajectories on fresh training problems (and, for choosing the head's epoch, on dev problems).
        var samplingClock = Stopwatch.StartNew();
        var rules = tokenizer.StepRules();
        int[] eos = tokenizer.EosTokenId is int e ? [e] : [];
        var (trainData, _, dev, _) = await SamplePhaseAsync(policy, tokenizer, outputDirectory, workDirectory, progress, cancellationToken).ConfigureAwait(false);
        using var train = trainData;
        samplingClock.Stop();

        // Phase 3: the head.
        try
        {
            var headClock = Stopwatch.StartNew();
            manual_seed(recipe.Seed);
            using var head = new SprmHead(recipe.HiddenSize, CPU);
            var result = new SprTrainer(recipe, tokenizer, rules, eos).TrainHead(head, train, dev, progress);
            SafeTensors.Save(Path.Combine(outputDirectory, ReflectiveModel.HeadSafetensorsName), head.StateDict(),
                new Dictionary<string, string> { ["format"] = "pt" });
            File.WriteAllLines(Path.Combine(workDirectory, "sprm-training.log"), result.Log);
            if (dev is not null) WriteDevDump(Path.Combine(workDirectory, "sprm-dev-scores.tsv"), head, dev);
            headClock.Stop();

            return new BuildSummary(outputDirectory, TimeSpan.Zero, samplingClock.Elapsed, headClock.Elapsed, TimeSpan.Zero,
                train.Trajectories.Count, train.StepCount, train.Accuracy, result.Log,
                policy.parameters().Sum(p => p.numel()), head.ParameterCount)
            {
                SprDataCached = train.FromCache && (dev?.FromCache ?? true),
                DevTrajectories = dev?.Trajectories.Count ?? 0,
                DevSampleAccuracy = dev?.Accuracy ?? double.NaN,
                SelectedEpoch = result.SelectedEpoch,
                DevAuroc = result.DevAuroc,
                DevBestOfN = result.DevBestOfN,
                DevFamilies = result.DevFamilies,
            };
        }
        finally { dev?.Dispose(); }
    }

    /// <summary>Per dev trajectory: grade, steps, trajectory score and step scores, text, for looking at what the head ranks first.</summary>
    private static void WriteDevDump(string path, SprmHead head, SprData dev)
    {
        float[] logits;
        using (no_grad())
        using (NewDisposeScope())
            logits = dev.StepCount == 0 ? [] : head.Logits(dev.Features).data<float>().ToArray();
        var lines = new List<string> { "problem\tcandidate\tcorrect\tfinished\tsteps\tscore\tstep_logits\tanswer\ttext" };
        int row = 0;
        foreach (var t in dev.Trajectories)
        {
            var stepLogits = logits.Skip(row).Take(t.Steps).ToList();
            row += t.Steps;
            double score = TrajectoryScore.Aggregate(stepLogits.Select(l => TrajectoryScore.Sigmoid(l)).ToList());
            lines.Add(string.Join('\t', t.ProblemIndex, t.CandidateIndex, t.Correct ? 1 : 0, t.Finished ? 1 : 0, t.Steps, score.ToString("F6"),
                string.Join(',', stepLogits.Select(l => l.ToString("F2"))), t.Answer ?? "", t.Text.Replace("\n", "\\n").Replace("\t", " ")));
        }
        File.WriteAllLines(path, lines);
    }
}
