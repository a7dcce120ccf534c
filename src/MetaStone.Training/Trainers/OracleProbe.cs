using System.Globalization;
using System.Text.RegularExpressions;
using MetaStone.Model;
using MetaStone.Reasoning;
using MetaStone.Training.Tasks;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace MetaStone.Training.Trainers;

/// <summary>
/// The gate of issue 10 (after docs/experiments/chain-only-analysis.md): a head of the same shape trained with plain BCE against <em>oracle</em> per-step labels
/// (parsed from the step text with the task's rules, which the shipped head never sees) on the same frozen
/// hidden_states[-2] features. If even this probe cannot rank a problem's own samples, no SPR-loss head on these
/// features can, and the task or trace format has to change, not the head. It is a diagnostic only: nothing it
/// trains is shipped.
/// </summary>
public static partial class OracleProbe
{
    /// <summary>
    /// Oracle label of every step of a trajectory, or null when the text does not split into exactly as many steps as
    /// the SPRM scored (then the trajectory is left out). Chain: the step's arithmetic is true. Search: the attempt's
    /// arithmetic is true, it uses only given numbers (each at most once), and it really ends at the target.
    /// </summary>
    public static float[]? StepLabels(SprTrajectoryInfo trajectory, TaskProblem problem)
    {
        string think = trajectory.Text;
        int close = think.IndexOf(TaskChatFormat.ThinkClose, StringComparison.Ordinal);
        if (close >= 0) think = think[..close];
        var pieces = think.Split(TaskChatFormat.StepEnd);
        var steps = pieces[..^1].Where(s => s.Trim().Length > 0).ToList();
        if (steps.Count != trajectory.Steps) return null;
        var spec = CountdownSpec.TryParse(problem.Answer);
        return [.. steps.Select(s => (spec is null ? ChainStepTrue(s) : SearchStepSucceeds(s, spec)) ? 1f : 0f)];
    }

    public static bool ChainStepTrue(string step)
    {
        var m = ChainStep().Match(step.Trim());
        return m.Success && CountdownTask.Apply(Num(m, "a"), m.Groups["op"].Value[0], Num(m, "b")) == Num(m, "r");
    }

    /// <summary>
    /// True when an attempt (<c>9 * 7 = 63, + 3 = 66, + 2 = 68 vs 68, yes</c>) is true arithmetic on the given numbers (each at
    /// most once) and its final value is the target. What the attempt says of itself (yes / no) is not trusted.
    /// </summary>
    public static bool SearchStepSucceeds(string step, CountdownSpec spec)
    {
        var m = SearchStep().Match(step.Trim());
        if (!m.Success) return false;   // "Out of attempts" (the give-up step) fails by definition
        var available = spec.Numbers.GroupBy(n => n).ToDictionary(g => g.Key, g => g.Count());
        bool Take(long n) { if (!available.TryGetValue(n, out var c) || c == 0) return false; available[n] = c - 1; return true; }
        long running = long.Parse(m.Groups["first"].Value, CultureInfo.InvariantCulture);
        if (!Take(running)) return false;
        var ops = m.Groups["op"].Captures; var operands = m.Groups["b"].Captures; var results = m.Groups["r"].Captures;
        for (int i = 0; i < ops.Count; i++)
        {
            long b = long.Parse(operands[i].Value, CultureInfo.InvariantCulture), r = long.Parse(results[i].Value, CultureInfo.InvariantCulture);
            if (!Take(b) || CountdownTask.Apply(running, ops[i].Value[0], b) != r) return false;
            running = r;
        }
        return running == spec.Target;
    }

    private static long Num(Match m, string g) => long.Parse(m.Groups[g].Value, CultureInfo.InvariantCulture);

    [GeneratedRegex(@"^(?<a>-?\d+) (?<op>[-+*/]) (?<b>\d+) = (?<r>-?\d+)$", RegexOptions.CultureInvariant)]
    private static partial Regex ChainStep();

    [GeneratedRegex(@"^(?<first>\d+)(?:,? (?<op>[-+*/]) (?<b>\d+) = (?<r>-?\d+))+ vs -?\d+, (?:yes|no)$", RegexOptions.CultureInvariant)]
    private static partial Regex SearchStep();

    /// <summary>
    /// Trains the probe (standardized features, plain BCE on oracle labels, AdamW lr 1e-3, batch 512) and returns one log line per
    /// epoch with the dev figures per family (Best-of-N over each dev problem's samples, random pick, AUROC).
    /// </summary>
    public static List<string> Run(SprData train, IReadOnlyList<TaskProblem> trainProblems, SprData dev, IReadOnlyList<TaskProblem> devProblems,
        int hiddenSize, int epochs, long seed)
    {
        var log = new List<string>();
        var (trainRows, trainLabels, trainSkipped) = Rows(train, trainProblems);
        var (_, _, devSkipped) = Rows(dev, devProblems);
        log.Add($"oracle probe: {trainLabels.Length} train steps ({trainLabels.Count(l => l > 0.5f)} labelled true), {trainSkipped} train / {devSkipped} dev trajectories skipped (step split mismatch)");
        manual_seed(seed);
        using var head = new SprmHead(hiddenSize, CPU);
        using var mean = train.Features.mean([0]);
        using var std = train.Features.std([0]).clamp_min(1e-4);
        using var x = ((train.Features.index_select(0, tensor(trainRows)) - mean) / std).detach();
        using var y = tensor(trainLabels);
        using var devX = ((dev.Features - mean) / std).detach();
        var devOwner = dev.Owner;
        var parameters = head.Module.parameters().ToList();
        using var optimizer = optim.AdamW(parameters, lr: 1e-3, weight_decay: 0.01);
        var rng = new Random(unchecked((int)seed));
        int n = trainLabels.Length;
        for (int epoch = 0; epoch < epochs; epoch++)
        {
            head.Module.train();
            var order = Enumerable.Range(0, n).OrderBy(_ => rng.Next()).Select(i => (long)i).ToArray();
            for (int start = 0; start < n; start += 512)
            {
                using var scope = NewDisposeScope();
                var index = tensor(order.Skip(start).Take(512).ToArray());
                optimizer.zero_grad();
                var loss = F.binary_cross_entropy_with_logits(head.Logits(x.index_select(0, index)), y.index_select(0, index));
                loss.backward();
                optimizer.step();
            }
            head.Module.eval();
            var scores = SprTrainer.Scores(head, devX, dev.Trajectories.Count, devOwner);
            var d = SprTrainer.DevStatsOf(scores, dev.Trajectories);
            log.Add($"probe epoch {epoch + 1}/{epochs}: dev {d.Describe()}");
        }
        return log;
    }

    /// <summary>Feature rows and oracle labels of every trajectory whose steps split cleanly.</summary>
    private static (long[] Rows, float[] Labels, int Skipped) Rows(SprData data, IReadOnlyList<TaskProblem> problems)
    {
        var rows = new List<long>();
        var labels = new List<float>();
        int skipped = 0, row = 0;
        foreach (var t in data.Trajectories)
        {
            var l = StepLabels(t, problems[t.ProblemIndex]);
            if (l is null) skipped++;
            else
                for (int s = 0; s < t.Steps; s++) { rows.Add(row + s); labels.Add(l[s]); }
            row += t.Steps;
        }
        return ([.. rows], [.. labels], skipped);
    }
}
