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

/// <summary>The head training log, the epoch whose weights the head ended with, and its dev-set figures.</summary>
public sealed record SprHeadResult(IReadOnlyList<string> Log, int SelectedEpoch, double DevAuroc, double DevBestOfN)
{
    public IReadOnlyList<SprTrainer.SprFamilyDevStats> DevFamilies { get; init; } = [];
}

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
        IReadOnlyList<int> eos, IReadOnlyList<TaskProblem> problems, int samplesPerProblem, int maxNewTokens, long seed,
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
                bool correct = AnswerGrader.IsCorrect(text, problem.Answer);
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

    /// <summary>Trains <paramref name="head"/> on the labelled steps of the policy's own samples; returns per-epoch logs.</summary>
    public List<string> TrainHead(SprmHead head, Tensor features, IReadOnlyList<LabeledTrajectory> trajectories,
        Action<TrainingProgress>? progress = null) =>
        TrainHead(head, new SprData
        {
            Features = features,
            Trajectories = trajectories.Select(t => new SprTrajectoryInfo(t.ProblemIndex, t.Trajectory.CandidateIndex, t.Correct, t.Finished,
                t.FeaturePositions.Length, null, "")).ToList(),
        }, dev: null, progress).Log.ToList();

    /// <summary>
    /// Trains <paramref name="head"/> with <see cref="SprLoss"/> on <paramref name="train"/>. After every epoch the trajectory
    /// scores of <paramref name="dev"/> (samples of held-out dev problems, never the test split) are measured; with
    /// <see cref="TrainingRecipe.SprSelectBy"/> other than "last" the head ends with the weights of the best dev epoch.
    /// With <see cref="TrainingRecipe.SprStandardizeFeatures"/> the head is trained on per-channel standardized features
    /// (an optimizer preconditioning only: the raw residual stream has channels of very different scale) and the
    /// standardization is folded into the first Linear at the end, so the shipped head reads raw hidden_states[-2] exactly as before.
    /// </summary>
    public SprHeadResult TrainHead(SprmHead head, SprData train, SprData? dev, Action<TrainingProgress>? progress = null)
    {
        if (recipe.SprSelectBy is not ("last" or "dev-auroc" or "dev-best-of-n"))
            throw new ArgumentException($"SprSelectBy must be last, dev-auroc or dev-best-of-n, got '{recipe.SprSelectBy}'");
        var log = new List<string>();
        if (train.StepCount == 0) { log.Add("no steps to train on"); return new SprHeadResult(log, 0, double.NaN, double.NaN); }
        var trainOwner = train.Owner;
        var devOwner = dev?.Owner;
        var y = tensor(train.Labels);
        var v = tensor(train.Valid);

        Tensor? mean = null, std = null;
        Tensor Prepare(Tensor x) => mean is null ? x : (x - mean) / std!;
        if (recipe.SprStandardizeFeatures)
        {
            mean = train.Features.mean([0]);
            std = train.Features.std([0]).clamp_min(1e-4);
        }
        // Without standardization these are the callers' own tensors: dispose only what was made here.
        var trainX = Prepare(train.Features);
        var devX = dev is null || dev.StepCount == 0 ? null : Prepare(dev.Features);
        using var ownTrainX = mean is null ? null : trainX;
        using var ownDevX = mean is null ? null : devX;

        var parameters = head.Module.parameters().ToList();
        var optimizer = (TorchSharp.Modules.OptimizerHelper)torch.optim.AdamW(parameters, lr: recipe.SprLearningRate, weight_decay: recipe.SprWeightDecay);
        var rng = new Random(unchecked((int)recipe.Seed));
        var clock = Stopwatch.StartNew();
        int n = train.StepCount;
        int batchesPerEpoch = (n + recipe.SprBatchSize - 1) / recipe.SprBatchSize;
        int totalBatches = batchesPerEpoch * recipe.SprEpochs, batchIndex = 0;
        double bestMetric = double.NegativeInfinity;
        int bestEpoch = 0;
        Dictionary<string, Tensor>? best = null;
        SprDevStats? bestDev = null;
        for (int epoch = 0; epoch < recipe.SprEpochs; epoch++)
        {
            head.Module.train();
            var order = Enumerable.Range(0, n).OrderBy(_ => rng.Next()).Select(i => (long)i).ToArray();
            double lossSum = 0, lr = recipe.SprLearningRate;
            int batches = 0;
            for (int start = 0; start < n; start += recipe.SprBatchSize)
            {
                // Cosine decay from SprLearningRate to SprMinLearningRate over all batches (constant when they are equal).
                lr = recipe.SprMinLearningRate + 0.5 * (recipe.SprLearningRate - recipe.SprMinLearningRate) * (1 + Math.Cos(Math.PI * batchIndex++ / totalBatches));
                foreach (var group in optimizer.ParamGroups) group.LearningRate = lr;
                using var scope = NewDisposeScope();
                var index = tensor(order.Skip(start).Take(recipe.SprBatchSize).ToArray());
                optimizer.zero_grad();
                var (loss, _) = SprLoss.Compute(head.Logits(trainX.index_select(0, index)), y.index_select(0, index), v.index_select(0, index));
                loss.backward();
                nn.utils.clip_grad_norm_(parameters, 1.0);
                optimizer.step();
                lossSum += loss.item<float>();
                batches++;
            }
            head.Module.eval();
            var (correctMean, wrongMean, auroc) = TrajectoryScoreStats(head, trainX, train.Trajectories, trainOwner);
            string line = $"epoch {epoch + 1}/{recipe.SprEpochs}: loss {lossSum / batches:F4}  train: mean score correct {correctMean:F3} wrong {wrongMean:F3}  AUROC {auroc:F3}";
            if (devX is not null)
            {
                var d = DevStats(head, devX, dev!.Trajectories, devOwner!);
                line += $"  | dev: AUROC {d.Auroc:F3}  Best-of-{d.K} {d.BestOfN:P1} (random {d.Random:P1}, majority {d.Majority:P1})  | {d.Describe()}";
                double metric = recipe.SprSelectBy switch
                {
                    "dev-auroc" => d.Auroc,
                    "dev-best-of-n" => d.BestOfN + 1e-3 * d.Auroc,
                    _ => epoch,
                };
                // A head trained on until its scores saturate ties many candidates at the top (selection then falls to the
                // lowest index): an epoch with more ties than allowed in some family loses to every epoch within the limit.
                if (d.Families.Any(f => f.TiesAtTop > recipe.SprMaxDevTies)) metric -= 10;
                if (metric > bestMetric)
                {
                    bestMetric = metric;
                    bestEpoch = epoch + 1;
                    bestDev = d;
                    if (best is not null) foreach (var t in best.Values) t.Dispose();
                    best = head.Module.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());
                }
            }
            log.Add(line);
            progress?.Invoke(new TrainingProgress("sprm", epoch + 1, recipe.SprEpochs, lossSum / batches, 0, lr, clock.Elapsed, line));
        }
        if (best is not null && recipe.SprSelectBy != "last")
        {
            using (no_grad()) head.Module.load_state_dict(best);
            log.Add($"selected epoch {bestEpoch} by {recipe.SprSelectBy}: dev AUROC {bestDev!.Auroc:F3}, dev Best-of-{bestDev.K} {bestDev.BestOfN:P1} (random {bestDev.Random:P1})  | {bestDev.Describe()}");
        }
        else if (devX is not null)
        {
            bestDev = DevStats(head, devX, dev!.Trajectories, devOwner!);
            bestEpoch = recipe.SprEpochs;
        }
        if (best is not null) foreach (var t in best.Values) t.Dispose();
        if (mean is not null)
        {
            using var _ = no_grad();
            using var scope = NewDisposeScope();
            var probe = train.Features.narrow(0, 0, Math.Min(n, 4096));
            var reference = head.Logits(Prepare(probe));
            var linear = (TorchSharp.Modules.Linear)head.Module[0];
            var w = linear.weight!.detach() / std!.unsqueeze(0);   // W' = W / σ
            var b = linear.bias!.detach() - w.matmul(mean);          // b' = b − W' μ
            linear.weight!.copy_(w);
            linear.bias!.copy_(b);
            double diff = (head.Logits(probe) - reference).abs().max().item<float>();
            log.Add($"standardization folded into 0.weight/0.bias (max logit change {diff:E1} on {probe.shape[0]} raw feature rows)");
            mean.Dispose(); std.Dispose();
        }
        return new SprHeadResult(log, bestEpoch, bestDev?.Auroc ?? double.NaN, bestDev?.BestOfN ?? double.NaN) { DevFamilies = bestDev?.Families ?? [] };
    }

    /// <summary>Dev-set statistics of the current head: AUROC of trajectory scores and Best-of-N over each problem's samples.</summary>
    /// <summary>
    /// Dev figures: <see cref="Auroc"/> is the mean of the per-family AUROCs (a head must rank within a family, where its
    /// problems' candidates compete; the pooled AUROC would also reward telling the families apart), Best-of-N and the
    /// votes are over all dev problems, and <see cref="Families"/> has each family's own figures.
    /// </summary>
    public sealed record SprDevStats(double Auroc, double BestOfN, double Majority, double Random, int K, IReadOnlyList<SprFamilyDevStats> Families)
    {
        public string Describe() => string.Join("  ", Families.Select(f =>
            $"{TaskSuite.NameOf(f.Family)}: AUROC {f.Auroc:F3} Best-of-{f.K} {f.BestOfN:P1} (random {f.Random:P1}, majority {f.Majority:P1}, weighted {f.Weighted:P1}) ties {f.TiesAtTop:P1}"));
    }

    /// <summary>One family's dev figures; <see cref="TiesAtTop"/> as in <see cref="FamilyEval.TiesAtTop"/>.</summary>
    public sealed record SprFamilyDevStats(TaskFamily Family, double Auroc, double BestOfN, double Majority, double Weighted, double Random, double TiesAtTop, int K);

    public static SprDevStats DevStats(SprmHead head, Tensor features, IReadOnlyList<SprTrajectoryInfo> trajectories, IReadOnlyList<int> owner) =>
        DevStatsOf(Scores(head, features, trajectories.Count, owner), trajectories);

    /// <summary><see cref="DevStats"/> from trajectory scores already computed (one per trajectory).</summary>
    public static SprDevStats DevStatsOf(IReadOnlyList<double> scores, IReadOnlyList<SprTrajectoryInfo> trajectories)
    {
        static (KAccuracy AtK, double Ties, int K) Select(IEnumerable<(SprTrajectoryInfo T, double Score)> items)
        {
            var groups = items.GroupBy(x => x.T.ProblemIndex).ToList();
            var perProblem = groups.Select(g => (IReadOnlyList<GradedCandidate>)g.Select(x => new GradedCandidate(x.Score, x.T.Answer, x.T.Correct)).ToList()).ToList();
            int k = perProblem.Count == 0 ? 1 : perProblem.Max(p => p.Count);
            double ties = groups.Count == 0 ? 0 : groups.Count(g => TtsEvaluator.HasTieAtTop(g.Select(x => (x.Score, x.T.Text)).ToList())) / (double)groups.Count;
            return (ScalingStatistics.AtK(perProblem, k), ties, k);
        }
        var pairs = trajectories.Select((t, i) => (T: t, Score: scores[i])).ToList();
        var families = pairs.GroupBy(p => p.T.Family).OrderBy(g => g.Key).Select(g =>
        {
            var (atK, ties, k) = Select(g);
            var auroc = ScalingStatistics.Auroc(g.Select(x => x.Score).ToList(), g.Select(x => x.T.Correct).ToList());
            return new SprFamilyDevStats(g.Key, auroc, atK.SprmBestOfN, atK.MajorityVote, atK.SprmWeightedVote, atK.RandomPick, ties, k);
        }).ToList();
        var (all, _, kAll) = Select(pairs);
        var aurocs = families.Select(f => f.Auroc).Where(a => !double.IsNaN(a)).ToList();
        return new SprDevStats(aurocs.Count == 0 ? double.NaN : aurocs.Average(), all.SprmBestOfN, all.MajorityVote, all.RandomPick, kAll, families);
    }

    /// <summary>Geometric-mean trajectory score of every trajectory (0 when it has no step) under the head in its current mode.</summary>
    public static List<double> Scores(SprmHead head, Tensor features, int trajectories, IReadOnlyList<int> owner)
    {
        float[] logits;
        using (no_grad())
        using (NewDisposeScope())
            logits = features.shape[0] == 0 ? [] : head.Logits(features).data<float>().ToArray();
        var perTrajectory = new List<double>[trajectories];
        for (int i = 0; i < perTrajectory.Length; i++) perTrajectory[i] = [];
        for (int s = 0; s < logits.Length; s++) perTrajectory[owner[s]].Add(TrajectoryScore.Sigmoid(logits[s]));
        return perTrajectory.Select(p => TrajectoryScore.Aggregate(p)).ToList();
    }

    /// <summary>Mean geometric-mean trajectory score of correct vs wrong samples (the paper's fc/correct_prob, fc/false_prob) and their AUROC.</summary>
    public static (double CorrectMean, double WrongMean, double Auroc) TrajectoryScoreStats(SprmHead head, Tensor features,
        IReadOnlyList<SprTrajectoryInfo> trajectories, IReadOnlyList<int> owner)
    {
        var scores = Scores(head, features, trajectories.Count, owner);
        var correct = trajectories.Select(t => t.Correct).ToList();
        double Mean(bool c) => scores.Where((_, i) => correct[i] == c).DefaultIfEmpty(double.NaN).Average();
        return (Mean(true), Mean(false), ScalingStatistics.Auroc(scores, correct));
    }

    /// <inheritdoc cref="TrajectoryScoreStats(SprmHead, Tensor, IReadOnlyList{SprTrajectoryInfo}, IReadOnlyList{int})"/>
    public static (double CorrectMean, double WrongMean, double Auroc) TrajectoryScoreStats(SprmHead head, Tensor features,
        IReadOnlyList<LabeledTrajectory> trajectories, IReadOnlyList<int> owner) =>
        TrajectoryScoreStats(head, features, trajectories.Select(t => new SprTrajectoryInfo(t.ProblemIndex, t.Trajectory.CandidateIndex, t.Correct,
            t.Finished, t.FeaturePositions.Length, null, "")).ToList(), owner);

    public StepTokenSet Rules => rules;
    public IReadOnlyList<int> Eos => eos;
    public QwenTokenizer Tokenizer => tokenizer;
}
