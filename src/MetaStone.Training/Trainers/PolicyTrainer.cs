using System.Diagnostics;
using MetaStone.Model;
using MetaStone.Model.Checkpoints;
using MetaStone.Model.Tokenization;
using MetaStone.Training.Tasks;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace MetaStone.Training.Trainers;

/// <summary>Progress of a training phase, for the progress bar and the log.</summary>
public sealed record TrainingProgress(string Phase, int Step, int TotalSteps, double Loss, double TokensPerSecond, double LearningRate, TimeSpan Elapsed, string? Extra = null);

/// <summary>
/// Next-token training of the policy on reference solutions of both task families (mixed per batch as the suite mixes them): AdamW, linear
/// warm-up then cosine decay, gradient clipping, loss on response tokens only (the prompt is given, not
/// learned), checkpoints that resume exactly (weights, optimizer moments, step, data position).
/// </summary>
public sealed class PolicyTrainer(TrainingRecipe recipe, QwenTokenizer tokenizer, TaskSuite suite)
{
    public const string CheckpointFolder = "checkpoint";

    public Qwen2Config ModelConfig => new()
    {
        VocabSize = tokenizer.VocabSize,
        HiddenSize = recipe.HiddenSize,
        IntermediateSize = recipe.IntermediateSize,
        NumHiddenLayers = recipe.Layers,
        NumAttentionHeads = recipe.Heads,
        NumKeyValueHeads = recipe.KvHeads,
        HeadDim = recipe.HiddenSize / recipe.Heads,
        RopeTheta = recipe.RopeTheta,
        MaxPositionEmbeddings = recipe.MaxPositions,
        TieWordEmbeddings = true,
        TorchDtype = "float32",
        EosTokenIds = tokenizer.EosTokenId is int e ? [e] : [],
    };

    /// <summary>Prompt ids and response ids (solution + end of turn) of one problem.</summary>
    public (int[] Prompt, int[] Response) Encode(TaskProblem problem)
    {
        var prompt = tokenizer.Encode(TaskChatFormat.GenerationPrompt(problem.Prompt));
        var response = tokenizer.Encode(problem.Solution + TaskChatFormat.ImEnd);
        return (prompt, response);
    }

    /// <summary>Learning rate at a step: linear warm-up, then cosine down to the minimum.</summary>
    public double LearningRateAt(int step)
    {
        if (step < recipe.WarmupSteps) return recipe.LearningRate * (step + 1) / recipe.WarmupSteps;
        double progress = (double)(step - recipe.WarmupSteps) / Math.Max(1, recipe.PolicySteps - recipe.WarmupSteps);
        return recipe.MinLearningRate + 0.5 * (recipe.LearningRate - recipe.MinLearningRate) * (1 + Math.Cos(Math.PI * Math.Min(1, progress)));
    }

    /// <summary>Trains (or resumes from <paramref name="workDirectory"/>/checkpoint) and returns the model.</summary>
    public Qwen2ForCausalLM Train(string workDirectory, Action<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var config = ModelConfig;
        var model = new Qwen2ForCausalLM(config, ScalarType.Float32, CPU);
        model.InitializeWeights(recipe.Seed);
        var parameters = model.parameters().ToList();
        var optimizer = (TorchSharp.Modules.OptimizerHelper)torch.optim.AdamW(parameters, lr: recipe.LearningRate, beta1: 0.9, beta2: 0.95, weight_decay: recipe.WeightDecay);

        int startStep = 0;
        string checkpointDir = Path.Combine(workDirectory, CheckpointFolder);
        if (File.Exists(Path.Combine(checkpointDir, "state.json")))
            startStep = LoadCheckpoint(checkpointDir, model, optimizer);

        // The data stream is a pure function of (seed, step): resuming at step s sees exactly the batches it would have.
        int pad = tokenizer.GetTokenId(TaskChatFormat.EndOfText);
        var clock = Stopwatch.StartNew();
        long tokens = 0;
        double smoothedLoss = double.NaN;
        model.train();
        for (int step = startStep; step < recipe.PolicySteps; step++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            double lr = LearningRateAt(step);
            foreach (var group in optimizer.ParamGroups) group.LearningRate = lr;
            // One family per batch, in the suite's proportion over steps: search traces are about twice as long as chains, and a
            // mixed batch would pad every chain to a search trace's length (measured: 1.4× more compute per step).
            var family = suite.IsSearchAt(step) ? TaskFamily.Search : TaskFamily.Chain;
            var problems = suite.Generate(TaskSplits.Train, recipe.BatchSize, seed: unchecked((int)(recipe.Seed * 7919 + step)), family);
            double loss;
            using (var scope = NewDisposeScope())
            {
                var (inputs, targets, count) = MakeBatch(problems, pad);
                tokens += count;
                optimizer.zero_grad();
                var logits = model.ForwardFull(inputs).Logits.view(-1, model.Config.VocabSize);
                Tensor l;
                if (decisionTokenIds.Count == 0)
                    l = F.cross_entropy(logits, targets.view(-1), ignore_index: -100);
                else
                {
                    // Weighted mean over response tokens: the verdict tokens count DecisionTokenWeight times (see the recipe).
                    using var weights = TokenWeights(targets);
                    var perToken = F.cross_entropy(logits, targets.view(-1), ignore_index: -100, reduction: nn.Reduction.None);
                    l = perToken.mul(weights).sum().div(weights.sum());
                }
                l.backward();
                nn.utils.clip_grad_norm_(parameters, recipe.ClipNorm);
                optimizer.step();
                loss = l.item<float>();
            }
            smoothedLoss = double.IsNaN(smoothedLoss) ? loss : 0.95 * smoothedLoss + 0.05 * loss;
            progress?.Invoke(new TrainingProgress("policy", step + 1, recipe.PolicySteps, smoothedLoss, tokens / clock.Elapsed.TotalSeconds, lr, clock.Elapsed));
            if ((step + 1) % recipe.CheckpointEvery == 0 || step + 1 == recipe.PolicySteps)
                SaveCheckpoint(checkpointDir, model, optimizer, step + 1);
        }
        model.eval();
        return model;
    }

    /// <summary>
    /// Token ids whose loss is weighted by <see cref="TrainingRecipe.DecisionTokenWeight"/>: the first token of each of
    /// <see cref="TrainingRecipe.DecisionWords"/> (with its leading space, as it follows ", " in a trace). Empty when the weight is 1.
    /// </summary>
    private readonly HashSet<long> decisionTokenIds = recipe.DecisionTokenWeight == 1.0 ? [] :
        [.. recipe.DecisionWords.Select(w => (long)tokenizer.Encode(" " + w)[0])];

    /// <summary>Per-target-position weights (flattened): 0 where ignored, DecisionTokenWeight on a verdict token, 1 elsewhere.</summary>
    public Tensor TokenWeights(Tensor targets)
    {
        var ids = targets.view(-1).data<long>().ToArray();
        var weights = new float[ids.Length];
        for (int i = 0; i < ids.Length; i++)
            weights[i] = ids[i] == -100 ? 0f : decisionTokenIds.Contains(ids[i]) ? (float)recipe.DecisionTokenWeight : 1f;
        return tensor(weights);
    }

    /// <summary>Right-padded batch; targets are the next token on response positions, -100 elsewhere.</summary>
    public (Tensor Inputs, Tensor Targets, long TokenCount) MakeBatch(IReadOnlyList<TaskProblem> problems, int pad)
    {
        var encoded = problems.Select(Encode).ToList();
        int length = encoded.Max(e => e.Prompt.Length + e.Response.Length) - 1;
        var inputs = new long[problems.Count * length];
        var targets = new long[problems.Count * length];
        Array.Fill(inputs, pad);
        Array.Fill(targets, -100);
        long count = 0;
        for (int b = 0; b < encoded.Count; b++)
        {
            var (prompt, response) = encoded[b];
            var all = prompt.Concat(response).ToArray();
            for (int t = 0; t < all.Length - 1; t++)
            {
                inputs[b * length + t] = all[t];
                if (t + 1 >= prompt.Length) targets[b * length + t] = all[t + 1];
            }
            count += all.Length;
        }
        return (tensor(inputs).view(problems.Count, length), tensor(targets).view(problems.Count, length), count);
    }

    private static void SaveCheckpoint(string dir, Qwen2ForCausalLM model, TorchSharp.Modules.OptimizerHelper optimizer, int step)
    {
        System.IO.Directory.CreateDirectory(dir);
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach()));
        optimizer.save_state_dict(Path.Combine(dir, "optimizer.bin"));
        // state.json last: a checkpoint is complete only once it exists.
        File.WriteAllText(Path.Combine(dir, "state.json"), $"{{\"step\": {step}}}");
    }

    private static int LoadCheckpoint(string dir, Qwen2ForCausalLM model, TorchSharp.Modules.OptimizerHelper optimizer)
    {
        var state = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "state.json")))!;
        var tensors = SafeTensors.Load(Path.Combine(dir, "model.safetensors"));
        model.LoadWeights(tensors, _ => Path.Combine(dir, "model.safetensors"));
        foreach (var t in tensors.Values) t.Dispose();
        optimizer.load_state_dict(Path.Combine(dir, "optimizer.bin"));
        return state["step"]!.GetValue<int>();
    }
}
