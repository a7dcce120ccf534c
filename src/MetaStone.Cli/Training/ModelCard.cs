using MetaStone.Training;
using MetaStone.Training.Tasks;
using MetaStone.Training.Trainers;

namespace MetaStone.Cli.Training;

/// <summary>Writes the model card (README.md) of a trained model directory.</summary>
public static class ModelCard
{
    private static readonly string[] ChainOnlyIntro =
    [
        "A tiny MetaStone-S1-style reflective generative model trained by MetaStone.Cluster itself: a Qwen2-architecture",
        "policy that solves left-to-right arithmetic chains step by step inside `<think>…</think>`, and an SPRM head",
        "(`Linear(c,2c) → ReLU → Dropout → Linear(2c,1)` on `hidden_states[-2]`) that scores every step (`.\\n\\n`).",
        "It is the embedded default of the `metastone` CLI and the model of the test suite.",
        "",
    ];

    private static string[] TwoFamilyIntro()
    {
        var o = new CountdownTaskOptions();
        return
        [
            "A tiny MetaStone-S1-style reflective generative model trained by MetaStone.Cluster itself: a Qwen2-architecture",
            "policy that reasons step by step inside `<think>…</think>`, and an SPRM head (`Linear(c,2c) → ReLU → Dropout → Linear(2c,1)`",
            "on `hidden_states[-2]`, read at the token before each `.\\n\\n`) that scores every step. One model, two task families; the prompt says which:",
            "",
            "| family | prompt | what makes a trajectory wrong | selection that works |",
            "|---|---|---|---|",
            "| **search** (Countdown) | `Reach 50 with 15, 2, 20 using + - * /, each number at most once.` | the search did not find an expression within its attempts (answers `none`), or it miscounted | SPRM Best-of-N: success is visible in the text |",
            "| **chain** (arithmetic) | `Compute 47 + 385 - 29 * 3 from left to right.` | an arithmetic slip | majority vote: the right answer is the common one |",
            "",
            "It is the embedded default of the `metastone` CLI and the model of the test suite.",
            "",
            "## Trace formats, and why",
            "Chain: one step per operation, `47 + 385 = 432.\\n\\n432 - 29 = 403.\\n\\n…</think>\\n\\n\\boxed{1209}`.",
            "",
            $"Search: {o.Count} numbers in {o.MinNumber}..{o.MaxNumber}, a target in {o.MinTarget}..{o.MaxValue} (the value of one random attempt, so every problem is solvable).",
            "One step per attempt: an attempt combines all the numbers left to right in an order it picks and writes every result, then",
            "copies the target next to its final value and says whether they are equal: `20 - 2 = 18, + 15 = 33 vs 50, no.\\n\\n`,",
            $"`2 + 20 = 22, + 15 = 37 vs 37, yes.\\n\\n`. Values stay in 1..{o.MaxValue} and divisions are exact. The reference traces are honest searches:",
            $"up to {o.MaxAttempts} distinct random attempts, stopping at the first `yes`, then the fully parenthesised answer (`\\boxed{{(2 + 20) + 15}}`);",
            $"after {o.MaxAttempts} failed attempts the trace writes `Out of attempts.\\n\\n` and answers `\\boxed{{none}}`. The reference itself succeeds",
            $"on {ReferenceSolveRate():P0} of the problems (400 train problems, computed as this card is written), so whether a sample is right depends on its",
            "search, not on its arithmetic.",
            "",
            "**Why this format lets the head verify.** The SPRM reads `hidden_states[-2]` at the token before `.\\n\\n`, which in a search step",
            "is the attempt's own verdict (`yes` / `no`), and one token earlier the policy had to compare two numbers that stand a few tokens",
            "apart (its result and the copied target) to predict that verdict. So the success of the step is computed by the policy, for its own",
            "next-token prediction, exactly where the head reads. The first design ended a success right after the result and needed a comparison with",
            "the prompt's target far back; the 4-layer policy never learned it (docs/experiments/search-family-attempt.md). The verdict tokens weigh",
            "`DecisionTokenWeight` times in the policy loss, because they are one token in ~25 and `yes` is rare. The chain-only model's analysis",
            "showed that a head can only read what the policy computed at the feature position; checking a finished attempt is easier than finding one.",
            "",
        ];
    }

    /// <summary>Share of 400 train-split search problems whose reference trace finds the target.</summary>
    private static double ReferenceSolveRate()
    {
        var task = new CountdownTask();
        var problems = task.Generate(TaskSplits.Train, 400, seed: 9).ToList();
        return problems.Count(p => MetaStone.Reasoning.AnswerGrader.IsCorrect(task.Solution(p, traceSeed: 5), p.Spec.ToString())) / (double)problems.Count;
    }

    public static void Write(string directory, TrainingRecipe recipe, BuildSummary summary, EvalReport? report, string commandLine)
    {
        List<string> md =
        [
            "# metastone-tiny",
            "",
            .. (recipe.SearchFraction > 0 ? TwoFamilyIntro() : ChainOnlyIntro),
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
            $"- Policy training: next-token loss on reference solutions (response tokens only{(recipe.DecisionTokenWeight != 1 ? $"; the verdict tokens {string.Join(" / ", recipe.DecisionWords.Select(w => $"`{w}`"))} weigh {recipe.DecisionTokenWeight}×" : "")}), {recipe.PolicySteps} steps × batch {recipe.BatchSize}, AdamW (β 0.9/0.95, weight decay {recipe.WeightDecay}), lr {recipe.LearningRate} with {recipe.WarmupSteps} warm-up steps then cosine to {recipe.MinLearningRate}, gradient clipping {recipe.ClipNorm}.",
            $"  Families mixed {1 - recipe.SearchFraction:P0} chain / {recipe.SearchFraction:P0} search by steps (one family per batch, so short chains are not padded to search length); fresh problems every step, never the dev or test split.",
            $"- SPRM head ({summary.HeadParameters:N0} parameters): the policy samples {recipe.SprSamplesPerProblem} trajectories for each of {recipe.SprProblems} fresh training problems (both families, same mix; temperature 0.6, top-p 0.95, repetition penalty 1.05);",
            "  every step takes its trajectory's final correctness as label (the grader: the boxed number for chains, the boxed expression checked against the",
            "  numbers and the target for search); no step labels, no rule in the head. Self-supervised process reward loss (BCE on step logits, only steps whose current",
            "  prediction agrees with the label, class-balanced weights 1.5·n₋/n and n₊/n); truncated samples excluded.",
            $"  {recipe.SprEpochs} epochs, batch {recipe.SprBatchSize}, AdamW lr {recipe.SprLearningRate}" +
                (recipe.SprMinLearningRate < recipe.SprLearningRate ? $" with cosine decay to {recipe.SprMinLearningRate}" : "") + $", weight decay {recipe.SprWeightDecay}.",
            .. (recipe.SprStandardizeFeatures
                ? new[] { "  The head is trained on per-channel standardized features (mean / std of the training features) and the standardization is then",
                          "  folded into `0.weight`/`0.bias` (W' = W/σ, b' = b − W'μ): the shipped head is the same Linear–ReLU–Dropout–Linear on raw `hidden_states[-2]`." }
                : []),
            .. (recipe.SprDevProblems > 0
                ? new[] { $"  Epoch selection: the policy also samples {recipe.SprDevSamplesPerProblem} trajectories for each of {recipe.SprDevProblems} problems of the **dev** split",
                          $"  (never the test split); the head keeps the weights of the epoch with the best `{recipe.SprSelectBy}` on them" + (recipe.SprSelectBy == "dev-auroc" ? " (the mean of the per-family AUROCs)." : ".") }
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
            md.AddRange(TargetsSection(report, summary));
            if (File.Exists(Path.Combine(directory, "ANALYSIS.md")))
                md.AddRange(["", "The analysis behind the SPRM figures, with its measurements: [ANALYSIS.md](ANALYSIS.md)."]);
        }
        File.WriteAllText(Path.Combine(directory, "README.md"), string.Join('\n', md) + "\n");
    }

    /// <summary>Issue 10's targets checked against the evaluation (and the dev-split ties of the head training); every miss is listed.</summary>
    public static IReadOnlyList<string> TargetsSection(EvalReport report, BuildSummary? summary = null)
    {
        var checks = new List<(string Name, bool Met, string Value)>();
        if (report.Family("search") is { } search)
        {
            var byK = search.ByK.OrderBy(r => r.K).ToList();
            var top = byK[^1];
            double worstDrop = byK.Zip(byK.Skip(1)).Select(p => p.First.SprmBestOfN - p.Second.SprmBestOfN).DefaultIfEmpty(0).Max();
            checks.Add(("search: pass@1 between 15 % and 60 %", search.PassAt1 is >= 0.15 and <= 0.60, $"{search.PassAt1:P1}"));
            checks.Add(($"search: SPRM Best-of-{top.K} ≥ pass@1 + 20 points", top.SprmBestOfN >= search.PassAt1 + 0.20, $"{top.SprmBestOfN:P1} vs {search.PassAt1 + 0.20:P1}"));
            checks.Add(($"search: SPRM Best-of-{top.K} ≥ majority vote + 10 points", top.SprmBestOfN >= top.MajorityVote + 0.10, $"{top.SprmBestOfN:P1} vs {top.MajorityVote + 0.10:P1}"));
            checks.Add(("search: SPRM Best-of-N never falls by more than 1 point from one k to the next", worstDrop <= 0.01,
                string.Join(" → ", byK.Select(r => $"{r.SprmBestOfN:P1}"))));
            checks.Add(("search: trajectory AUROC ≥ 0.85", search.SprmAuroc >= 0.85, $"{search.SprmAuroc:F3}"));
        }
        if (report.Family("chain") is { } chain)
        {
            var top = chain.ByK.OrderBy(r => r.K).Last();
            checks.Add(($"chain: SPRM-weighted vote ≥ majority vote − 2 points at k = {top.K}", top.SprmWeightedVote >= top.MajorityVote - 0.02,
                $"{top.SprmWeightedVote:P1} vs {top.MajorityVote - 0.02:P1}"));
        }
        foreach (var f in summary?.DevFamilies ?? [])
            checks.Add(($"{TaskSuite.NameOf(f.Family)}: at most 5 % of dev problems with a tie at the top score", f.TiesAtTop <= 0.05, $"{f.TiesAtTop:P1} (of {f.K} samples each)"));
        var lines = new List<string> { "", "## Targets (issue 10)", "", "| target | measured | met |", "|---|---|---|" };
        lines.AddRange(checks.Select(c => $"| {c.Name} | {c.Value} | {(c.Met ? "yes" : "**no**")} |"));
        var missed = checks.Where(c => !c.Met).ToList();
        if (missed.Count > 0)
        {
            lines.Add("");
            lines.Add("## Known limitation (read before using the SPRM numbers)");
            lines.Add($"This checkpoint misses {missed.Count} of the targets above: {string.Join("; ", missed.Select(c => $"{c.Name} (measured {c.Value})"))}.");
        }
        return lines;
    }
}
