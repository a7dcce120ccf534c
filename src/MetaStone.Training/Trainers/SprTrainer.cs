using System.Diagnostics;
using MetaStone.Model;
using MetaStone.Model.Generation;
using MetaStone.Model.Tokenization;
using MetaStone.Reasoning;
using MetaStone.Training.Tasks;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Training.Trainers;

/// <summary>A sampled trajectory with its grade and the SPRM features of its steps.</summary>
public sealed record LabeledTrajectory(int ProblemIndex, Trajectory Trajectory, bool Correct, bool Finished, int[] FeaturePositions);

/// <summary>
/// Trains the SPRM head on the policy's own samples with <see cref="SprLoss"/>. The backbone is frozen
/// (see the model card): the released recipe scales the head's gradient into the backbone by 1e-4, which
/// is nearly frozen already; freezing lets the step features be computed once and the head trained for
/// many epochs in seconds, and it leaves the policy — and so pass@1 — exactly as the policy phase made it.
/// </summary>
public sealed class SprTrainer(TrainingRecipe recipe, QwenTokenizer tokenizer, StepTokenSet rules, IReadOnlyList<int> eos)
{
    /// <summary>Samples <paramref name="samplesPerProblem"/> trajectories per problem with the batching engine and grades them.</summary>
    public static async Task<List<LabeledTrajectory>> SampleAsync(Qwen2ForCausalLM policy, QwenTokenizer tokenizer, StepTokenSet rules,
        IReadOnlyList<int> eos, IReadOnlyList<ArithmeticProblem> problems, int samplesPerProblem, int maxNewTokens, long seed,
        SprmHead? head = null, Action<int, int>? progress = null, CancellationToken cancellationToken = default)
    {
        using var engine = new GenerationEngine(policy, head, new EngineOptions
        {
            MaxBatch = 128, MaxSequenceLength = Math.Min(policy.MaxPositions, 512), StepRules = rules, EosTokenIds = eos,
            Name = "metastone-sampler",
        });
        var results = new List<LabeledTrajectory>();
        int done = 0;
        var prompts = problems.Select(p => tokenizer.Encode(TaskChatFormat.GenerationPrompt(p.Prompt))).ToList();
        var tasks = problems.Select(async (problem, index) =>
        {
            var request = new GenerationRequest
            {
                PromptIds = prompts[index],
                Seeds = Enumerable.Range(0, samplesPerProblem).Select(i => seed + (long)index * 1000 + i).ToArray(),
                Sampling = new SamplingOptions { MaxNewTokens = maxNewTokens },
            };
            var trajectories = await engine.GenerateAsync(request, cancellationToken).ConfigureAwait(false);
            var labeled = trajectories.Select(t =>
            {
                string text = tokenizer.Decode(t.ResponseIds);
                bool correct = AnswerGrader.IsCorrect(text, problem.AnswerText);
                var positions = StepMask.FeaturePositions(prompts[index].Concat(t.ResponseIds).ToArray(), rules, prompts[index].Length).ToArray();
                return new LabeledTrajectory(index, t, correct, t.FinishReason == FinishReason.Stop, positions);
            }).ToList();
            lock (results)
            {
                results.AddRange(labeled);
                progress?.Invoke(++done, problems.Count);
            }
        }).ToList();
        await Task.WhenAll(tasks).ConfigureAwait(false);
        return [.. results.OrderBy(r => r.ProblemIndex).ThenBy(r => r.Trajectory.CandidateIndex)];
    }

    /// <summary>Re-encodes each trajectory once (no grad) and gathers hidden_states[-2] at its step feature positions.</summary>
    public static Tensor StepFeatures(Qwen2ForCausalLM policy, IReadOnlyList<int[]> prompts, IReadOnlyList<LabeledTrajectory> trajectories, int batchSize = 64)
    {
        var rows = new List<Tensor>();
        using var _ = no_grad();
        for (int start = 0; start < trajectories.Count; start += batchSize)
        {
            var batch = trajectories.Skip(start).Take(batchSize).ToList();
            using var scope = NewDisposeScope();
            var seqs = batch.Select(t => prompts[t.ProblemIndex].Concat(t.Trajectory.ResponseIds).ToArray()).ToList();
            int length = seqs.Max(s => s.Length);
            var ids = new long[batch.Count * length];
            for (int b = 0; b < seqs.Count; b++)
                for (int t = 0; t < seqs[b].Length; t++) ids[b * length + t] = seqs[b][t];
            var features = policy.ForwardFull(tensor(ids).view(batch.Count, length)).SprmFeatures; // right padding: causal attention keeps real rows exact
            var flat = new List<long>();
            for (int b = 0; b < batch.Count; b++)
                foreach (int p in batch[b].FeaturePositions) flat.Add((long)b * length + p);
            if (flat.Count > 0)
                rows.Add(features.view(-1, features.shape[^1]).index_select(0, tensor(flat.ToArray())).to_type(ScalarType.Float32).MoveToOuterDisposeScope());
        }
        return rows.Count == 0 ? zeros(0, policy.Config.HiddenSize) : cat(rows, 0);
    }

    /// <summary>Trains <paramref name="head"/> on the labelled steps; returns per-epoch logs.</summary>
    public List<string> TrainHead(SprmHead head, Tensor features, IReadOnlyList<LabeledTrajectory> trajectories,
        Action<TrainingProgress>? progress = null)
    {
        // Per-step label / validity / owning trajectory, aligned with the rows of features.
        var labels = new List<float>();
        var valid = new List<bool>();
        var owner = new List<int>();
        for (int i = 0; i < trajectories.Count; i++)
            foreach (var _ in trajectories[i].FeaturePositions)
            {
                labels.Add(trajectories[i].Correct ? 1f : 0f);
                valid.Add(trajectories[i].Finished); // truncated samples say nothing about correctness
                owner.Add(i);
            }
        var log = new List<string>();
        if (labels.Count == 0) { log.Add("no steps to train on"); return log; }
        var y = tensor(labels.ToArray());
        var v = tensor(valid.ToArray());
        var parameters = head.Module.parameters().ToList();
        var optimizer = torch.optim.AdamW(parameters, lr: recipe.SprLearningRate, weight_decay: recipe.SprWeightDecay);
        var rng = new Random(unchecked((int)recipe.Seed));
        var clock = Stopwatch.StartNew();
        int n = labels.Count;
        for (int epoch = 0; epoch < recipe.SprEpochs; epoch++)
        {
            head.Module.train();
            var order = Enumerable.Range(0, n).OrderBy(_ => rng.Next()).Select(i => (long)i).ToArray();
            double lossSum = 0;
            int batches = 0;
            for (int start = 0; start < n; start += recipe.SprBatchSize)
            {
                using var scope = NewDisposeScope();
                var index = tensor(order.Skip(start).Take(recipe.SprBatchSize).ToArray());
                optimizer.zero_grad();
                var (loss, _) = SprLoss.Compute(head.Logits(features.index_select(0, index)), y.index_select(0, index), v.index_select(0, index));
                loss.backward();
                nn.utils.clip_grad_norm_(parameters, 1.0);
                optimizer.step();
                lossSum += loss.item<float>();
                batches++;
            }
            head.Module.eval();
            var (correctMean, wrongMean, auroc) = TrajectoryScoreStats(head, features, trajectories, owner);
            string line = $"epoch {epoch + 1}/{recipe.SprEpochs}: loss {lossSum / batches:F4}  mean score correct {correctMean:F3} wrong {wrongMean:F3}  AUROC {auroc:F3}";
            log.Add(line);
            progress?.Invoke(new TrainingProgress("sprm", epoch + 1, recipe.SprEpochs, lossSum / batches, 0, recipe.SprLearningRate, clock.Elapsed, line));
        }
        return log;
    }

    /// <summary>Mean geometric-mean trajectory score of correct vs wrong samples (the paper's fc/correct_prob, fc/false_prob) and their AUROC.</summary>
    public static (double CorrectMean, double WrongMean, double Auroc) TrajectoryScoreStats(SprmHead head, Tensor features,
        IReadOnlyList<LabeledTrajectory> trajectories, IReadOnlyList<int> owner)
    {
        float[] logits;
        using (no_grad())
        using (NewDisposeScope())
            logits = head.Logits(features).data<float>().ToArray();
        var perTrajectory = new List<double>[trajectories.Count];
        for (int i = 0; i < perTrajectory.Length; i++) perTrajectory[i] = [];
        for (int s = 0; s < logits.Length; s++) perTrajectory[owner[s]].Add(TrajectoryScore.Sigmoid(logits[s]));
        var scores = perTrajectory.Select(p => TrajectoryScore.Aggregate(p)).ToList();
        var correct = trajectories.Select(t => t.Correct).ToList();
        double Mean(bool c) => scores.Where((_, i) => correct[i] == c).DefaultIfEmpty(double.NaN).Average();
        return (Mean(true), Mean(false), ScalingStatistics.Auroc(scores, correct));
    }

    public StepTokenSet Rules => rules;
    public IReadOnlyList<int> Eos => eos;
    public QwenTokenizer Tokenizer => tokenizer;
}
