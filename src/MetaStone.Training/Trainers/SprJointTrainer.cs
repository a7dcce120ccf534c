using System.Diagnostics;
using MetaStone.Model;
using MetaStone.Model.Tokenization;
using MetaStone.Reasoning;
using MetaStone.Training.Tasks;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace MetaStone.Training.Trainers;

/// <summary>
/// SPRM training with a scaled backbone gradient (sprm-reference §1.2: the released recipe lets the SPR loss reach the
/// backbone scaled by 1e-4 while the policy loss keeps training the policy). Every step: the SPR loss on a batch of the
/// policy's own sampled trajectories, with <c>features·λ + features.detach()·(1−λ)</c> (λ = <see cref="TrainingRecipe.SprBackboneGradScale"/>),
/// plus the policy's next-token loss on a batch of reference solutions (weight <see cref="TrainingRecipe.SprPolicyLossWeight"/>),
/// which stands in for the paper's policy-gradient loss and keeps the policy a policy. The head sees the same
/// hidden_states[-2] rows at the same positions as always; only the backbone that computes them moves.
/// </summary>
public sealed class SprJointTrainer(TrainingRecipe recipe, QwenTokenizer tokenizer, StepTokenSet rules, ArithmeticChainTask task)
{
    /// <summary>A sampled trajectory as token ids: the full sequence (prompt + response), its feature positions, label, validity.</summary>
    public sealed record Sequence(int[] Ids, int[] Positions, bool Correct, bool Finished);

    /// <summary>Re-tokenizes the cached text of each trajectory behind its prompt (the released scorer re-tokenizes too, sprm-reference §2.1).</summary>
    public List<Sequence> Encode(IReadOnlyList<ArithmeticProblem> problems, SprData data)
    {
        var prompts = problems.Select(p => tokenizer.Encode(TaskChatFormat.GenerationPrompt(p.Prompt))).ToList();
        return data.Trajectories.Select(t =>
        {
            var ids = prompts[t.ProblemIndex].Concat(tokenizer.Encode(t.Text)).ToArray();
            var positions = StepMask.FeaturePositions(ids, rules, prompts[t.ProblemIndex].Length).ToArray();
            return new Sequence(ids, positions, t.Correct, t.Finished);
        }).ToList();
    }

    /// <summary>Features [S, c] of all sequences under the current backbone (no grad).</summary>
    public static Tensor Features(Qwen2ForCausalLM policy, IReadOnlyList<Sequence> sequences, int batchSize = 64)
    {
        var rows = new List<Tensor>();
        using var _ = no_grad();
        for (int start = 0; start < sequences.Count; start += batchSize)
        {
            using var scope = NewDisposeScope();
            var (ids, flat) = Batch(sequences.Skip(start).Take(batchSize).ToList());
            var f = policy.ForwardFull(ids).SprmFeatures;
            if (flat.Length > 0) rows.Add(f.view(-1, f.shape[^1]).index_select(0, tensor(flat)).to_type(ScalarType.Float32).MoveToOuterDisposeScope());
        }
        return rows.Count == 0 ? zeros(0, policy.Config.HiddenSize) : cat(rows, 0);
    }

    private static (Tensor Ids, long[] Flat) Batch(IReadOnlyList<Sequence> batch)
    {
        int length = batch.Max(s => s.Ids.Length);
        var ids = new long[batch.Count * length];
        var flat = new List<long>();
        for (int b = 0; b < batch.Count; b++)
        {
            for (int t = 0; t < batch[b].Ids.Length; t++) ids[b * length + t] = batch[b].Ids[t];
            foreach (int p in batch[b].Positions) flat.Add((long)b * length + p);
        }
        return (tensor(ids).view(batch.Count, length), flat.ToArray());
    }

    /// <summary>
    /// Trains policy and head together; <paramref name="mean"/>/<paramref name="std"/> (fixed, from the starting backbone's training
    /// features) standardize the head's input and are folded into its first Linear at the end. Returns the log.
    /// </summary>
    public List<string> Train(Qwen2ForCausalLM policy, SprmHead head, IReadOnlyList<Sequence> train, IReadOnlyList<Sequence> dev,
        IReadOnlyList<SprTrajectoryInfo> devInfo, Tensor mean, Tensor std, Action<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var log = new List<string>();
        var policyTrainer = new PolicyTrainer(recipe, tokenizer, task);
        int pad = tokenizer.GetTokenId(TaskChatFormat.EndOfText);
        var backbone = policy.parameters().ToList();
        var headParameters = head.Module.parameters().ToList();
        var policyOptimizer = (TorchSharp.Modules.OptimizerHelper)torch.optim.AdamW(backbone, lr: recipe.SprBackboneLearningRate, beta1: 0.9, beta2: 0.95, weight_decay: recipe.WeightDecay);
        var headOptimizer = (TorchSharp.Modules.OptimizerHelper)torch.optim.AdamW(headParameters, lr: recipe.SprLearningRate, weight_decay: recipe.SprWeightDecay);
        var usable = train.Where(s => s.Positions.Length > 0 && s.Finished).ToList();
        var rng = new Random(unchecked((int)recipe.Seed) ^ 0x10157);
        var order = new List<int>();
        double lambda = recipe.SprBackboneGradScale;
        var clock = Stopwatch.StartNew();
        double sprSmooth = double.NaN, lmSmooth = double.NaN;
        var devOwner = devInfo.SelectMany((t, i) => Enumerable.Repeat(i, t.Steps)).ToArray();

        void Evaluate(int step)
        {
            head.Module.eval();
            policy.eval();
            using var scope = NewDisposeScope();
            var devX = (Features(policy, dev) - mean) / std;
            var d = SprTrainer.DevStats(head, devX, devInfo, devOwner);
            string line = $"step {step}/{recipe.SprJointSteps}: SPR loss {sprSmooth:F4}  policy loss {lmSmooth:F4}  | dev: AUROC {d.Auroc:F3}  Best-of-{d.K} {d.BestOfN:P1} (random {d.Random:P1}, majority {d.Majority:P1})";
            log.Add(line);
            progress?.Invoke(new TrainingProgress("sprm joint", step, recipe.SprJointSteps, sprSmooth, 0, recipe.SprLearningRate, clock.Elapsed, line));
        }

        for (int step = 0; step < recipe.SprJointSteps; step++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (order.Count < recipe.SprJointBatch) order.AddRange(Enumerable.Range(0, usable.Count).OrderBy(_ => rng.Next()));
            var batch = order.Take(recipe.SprJointBatch).Select(i => usable[i]).ToList();
            order.RemoveRange(0, batch.Count);
            // Cosine decay of both learning rates to a tenth.
            double decay = 0.1 + 0.45 * (1 + Math.Cos(Math.PI * step / recipe.SprJointSteps));
            foreach (var g in policyOptimizer.ParamGroups) g.LearningRate = recipe.SprBackboneLearningRate * decay;
            foreach (var g in headOptimizer.ParamGroups) g.LearningRate = recipe.SprLearningRate * decay;
            policy.train();
            head.Module.train();
            using var scope = NewDisposeScope();
            policyOptimizer.zero_grad();
            headOptimizer.zero_grad();

            var (ids, flat) = Batch(batch);
            var f = policy.ForwardFull(ids).SprmFeatures;
            f = f * lambda + f.detach() * (1 - lambda);
            var rows = f.view(-1, f.shape[^1]).index_select(0, tensor(flat));
            var labels = tensor(batch.SelectMany(s => Enumerable.Repeat(s.Correct ? 1f : 0f, s.Positions.Length)).ToArray());
            var (spr, _) = SprLoss.Compute(head.Logits((rows - mean) / std), labels);

            var problems = task.Generate(TaskSplits.Train, recipe.SprJointBatch, seed: unchecked((int)(recipe.Seed * 31 + 1_000_003 + step))).ToList();
            var (inputs, targets, _) = policyTrainer.MakeBatch(problems, pad);
            var logits = policy.ForwardFull(inputs).Logits;
            var lm = F.cross_entropy(logits.view(-1, logits.shape[^1]), targets.view(-1), ignore_index: -100);

            var total = spr + recipe.SprPolicyLossWeight * lm;
            total.backward();
            nn.utils.clip_grad_norm_(backbone, recipe.ClipNorm);
            nn.utils.clip_grad_norm_(headParameters, 1.0);
            policyOptimizer.step();
            headOptimizer.step();
            double s = spr.item<float>(), l = lm.item<float>();
            sprSmooth = double.IsNaN(sprSmooth) ? s : 0.98 * sprSmooth + 0.02 * s;
            lmSmooth = double.IsNaN(lmSmooth) ? l : 0.98 * lmSmooth + 0.02 * l;
            if ((step + 1) % recipe.SprJointEvalEvery == 0 || step + 1 == recipe.SprJointSteps) Evaluate(step + 1);
            else progress?.Invoke(new TrainingProgress("sprm joint", step + 1, recipe.SprJointSteps, sprSmooth, 0, recipe.SprLearningRate * decay, clock.Elapsed));
        }
        policy.eval();
        head.Module.eval();

        // Fold the fixed standardization into the first Linear: the shipped head reads raw hidden_states[-2].
        using (no_grad())
        {
            var linear = (TorchSharp.Modules.Linear)head.Module[0];
            var w = linear.weight!.detach() / std.unsqueeze(0);
            var b = linear.bias!.detach() - w.matmul(mean);
            linear.weight!.copy_(w);
            linear.bias!.copy_(b);
        }
        log.Add("standardization folded into 0.weight/0.bias");
        return log;
    }
}
