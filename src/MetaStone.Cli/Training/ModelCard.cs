using MetaStone.Training;
using MetaStone.Training.Trainers;

namespace MetaStone.Cli.Training;

/// <summary>Writes the model card (README.md) of a trained model directory.</summary>
public static class ModelCard
{
    public static void Write(string directory, TrainingRecipe recipe, BuildSummary summary, EvalReport? report, string commandLine)
    {
        List<string> md =
        [
            "# metastone-tiny",
            "",
            "A tiny MetaStone-S1-style reflective generative model trained by MetaStone.Cluster itself: a Qwen2-architecture",
            "policy that solves left-to-right arithmetic chains step by step inside `<think>…</think>`, and an SPRM head",
            "(`Linear(c,2c) → ReLU → Dropout → Linear(2c,1)` on `hidden_states[-2]`) that scores every step (`.\\n\\n`).",
            "It is the embedded default of the `metastone` CLI and the model of the test suite.",
            "",
            "## Files",
            "`config.json`, `model.safetensors` (policy), `score_module.safetensors` (SPRM head, keys `0.weight 0.bias 3.weight 3.bias`),",
            "`tokenizer.json` (byte-level BPE built for the task; `.\\n\\n` is one token), `tokenizer_config.json` (ChatML, `<think>\\n` opens the answer).",
            "",
            "## Recipe",
            summary.PolicySource is null
                ? $"Exact command: `{commandLine}` (the built-in recipe below, seed {recipe.Seed}). Re-running resumes from the work directory's checkpoint."
                : $"Exact command of this head: `{commandLine}` (the built-in recipe below, seed {recipe.Seed}): it keeps the policy weights of the model directory " +
                  "unchanged and re-runs only the self-sampling and SPRM head phases (sampled data is cached in the work directory). " +
                  "The policy itself was trained by `metastone train` (the policy phase of this recipe, same seed); " +
                  "`metastone train` without `--head-only` runs that phase first and then this head recipe.",
            "",
            $"- Policy: {recipe.Layers} layers, hidden {recipe.HiddenSize}, {recipe.Heads} heads / {recipe.KvHeads} KV heads, FFN {recipe.IntermediateSize}, tied embeddings, {summary.PolicyParameters:N0} parameters (fp32).",
            $"- Policy training: next-token loss on reference solutions (response tokens only), {recipe.PolicySteps} steps × batch {recipe.BatchSize}, AdamW (β 0.9/0.95, weight decay {recipe.WeightDecay}), lr {recipe.LearningRate} with {recipe.WarmupSteps} warm-up steps then cosine to {recipe.MinLearningRate}, gradient clipping {recipe.ClipNorm}.",
            $"- SPRM head ({summary.HeadParameters:N0} parameters): the policy samples {recipe.SprSamplesPerProblem} trajectories for each of {recipe.SprProblems} fresh training problems (temperature 0.6, top-p 0.95, repetition penalty 1.05);",
            "  every step takes its trajectory's final correctness as label; self-supervised process reward loss (BCE on step logits, only steps whose current",
            "  prediction agrees with the label, class-balanced weights 1.5·n₋/n and n₊/n); truncated samples excluded.",
            $"  {recipe.SprEpochs} epochs, batch {recipe.SprBatchSize}, AdamW lr {recipe.SprLearningRate}" +
                (recipe.SprMinLearningRate < recipe.SprLearningRate ? $" with cosine decay to {recipe.SprMinLearningRate}" : "") + $", weight decay {recipe.SprWeightDecay}.",
            .. (recipe.SprStandardizeFeatures
                ? new[] { "  The head is trained on per-channel standardized features (mean / std of the training features) and the standardization is then",
                          "  folded into `0.weight`/`0.bias` (W' = W/σ, b' = b − W'μ): the shipped head is the same Linear–ReLU–Dropout–Linear on raw `hidden_states[-2]`." }
                : []),
            .. (recipe.SprDevProblems > 0
                ? new[] { $"  Epoch selection: the policy also samples {recipe.SprDevSamplesPerProblem} trajectories for each of {recipe.SprDevProblems} problems of the **dev** split",
                          $"  (never the test split); the head keeps the weights of the epoch with the best `{recipe.SprSelectBy}` on them." }
                : []),
            "- **Backbone frozen during SPRM training.** The released recipe scales the head's gradient into the backbone by 1e-4, which is",
            "  nearly frozen already; freezing lets the step features be computed once and the head trained for many epochs in seconds,",
            "  and it leaves pass@1 exactly what policy training made it.",
            "",
            "## Training run",
            summary.PolicySource is null
                ? $"Total {summary.Total:mm\\:ss} on this 2-core CPU machine: policy {summary.PolicyTime:mm\\:ss}, self-sampling + features {summary.SamplingTime:mm\\:ss}, head {summary.HeadTime:mm\\:ss}."
                : $"Head-only build, total {summary.Total:mm\\:ss} on this 2-core CPU machine (shared with other work): self-sampling + features {summary.SamplingTime:mm\\:ss}" +
                  (summary.SprDataCached ? " (loaded from the work directory's cache, written by the first run of the same command)" : "") +
                  $", head {summary.HeadTime:mm\\:ss}; policy phase not re-run.",
            $"SPRM data: {summary.SprTrajectories} trajectories, {summary.SprSteps} scored steps, sample accuracy {summary.SprSampleAccuracy:P1}" +
                (summary.DevTrajectories > 0 ? $"; dev: {summary.DevTrajectories} trajectories, sample accuracy {summary.DevSampleAccuracy:P1}." : "."),
            "",
            "Mean trajectory score of correct vs wrong samples during head training:",
            "```",
            .. summary.HeadLog,
            "```",
        ];
        if (report is not null)
        {
            md.AddRange([
                "",
                "## Evaluation (`metastone eval`)",
                $"Held-out test split, default sampling (temperature 0.6, top-p 0.95, repetition penalty 1.05), 32 samples per problem scored in flight;",
                "k < 32 estimated from disjoint groups of the same samples. Random pick = expected accuracy of a uniformly chosen candidate.",
                "",
                report.ToTable(),
            ]);
            md.AddRange(TargetsSection(report));
            if (File.Exists(Path.Combine(directory, "ANALYSIS.md")))
                md.AddRange(["", "Why the SPRM head falls short, with the measurements behind it: [ANALYSIS.md](ANALYSIS.md)."]);
        }
        File.WriteAllText(Path.Combine(directory, "README.md"), string.Join('\n', md) + "\n");
    }

    /// <summary>The issue's targets checked against the evaluation; a "Known limitation" section lists every one that is missed.</summary>
    public static IReadOnlyList<string> TargetsSection(EvalReport report)
    {
        var byK = report.ByK.OrderBy(r => r.K).ToList();
        var top = byK[^1];
        bool rising = byK.Zip(byK.Skip(1)).All(p => p.Second.SprmBestOfN >= p.First.SprmBestOfN);
        var checks = new List<(string Name, bool Met, string Value)>
        {
            ("pass@1 between 25 % and 70 %", report.PassAt1 is >= 0.25 and <= 0.70, $"{report.PassAt1:P1}"),
            ("SPRM AUROC ≥ 0.75", report.SprmAuroc >= 0.75, $"{report.SprmAuroc:F3}"),
            ($"SPRM Best-of-{top.K} ≥ pass@1 + 15 points", top.SprmBestOfN >= report.PassAt1 + 0.15, $"{top.SprmBestOfN:P1} vs {report.PassAt1 + 0.15:P1}"),
            ($"SPRM Best-of-{top.K} above random pick", top.SprmBestOfN > top.RandomPick, $"{top.SprmBestOfN:P1} vs {top.RandomPick:P1}"),
            ("SPRM Best-of-N rising with k", rising, string.Join(" → ", byK.Select(r => $"{r.SprmBestOfN:P1}"))),
        };
        var lines = new List<string> { "", "## Targets (issue 3)", "", "| target | measured | met |", "|---|---|---|" };
        lines.AddRange(checks.Select(c => $"| {c.Name} | {c.Value} | {(c.Met ? "yes" : "**no**")} |"));
        var missed = checks.Where(c => !c.Met).ToList();
        if (missed.Count > 0)
        {
            lines.Add("");
            lines.Add("## Known limitation (read before using the SPRM numbers)");
            lines.Add($"This checkpoint misses {missed.Count} of the targets above: {string.Join("; ", missed.Select(c => $"{c.Name} (measured {c.Value})"))}.");
            lines.Add("The head-training log above has the dev-split figures of every epoch; `sprm-dev-scores.tsv` in the work directory lists every dev");
            lines.Add("trajectory with its step logits, for looking at which wrong trajectories the head ranks first.");
        }
        return lines;
    }
}
