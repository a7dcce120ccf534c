using System.CommandLine;
using System.Diagnostics;
using MetaStone.Cli.Training;
using MetaStone.Model;
using MetaStone.Training;
using MetaStone.Training.Trainers;

namespace MetaStone.Cli.Commands;

/// <summary>
/// <c>metastone train [--smoke] [--out DIR] [--work DIR] [--seed N] [--eval-problems N] [--recipe FILE] [--head-only [--policy DIR]]</c>: builds the tiny
/// reflective model (tokenizer, policy, SPRM head), evaluates it and writes its model card.
/// </summary>
public sealed class TrainCommand : ICliVerb
{
    public static Command Create()
    {
        var smoke = new Option<bool>("--smoke") { Description = "The ~2-minute preset: same code, smaller model and data." };
        var output = new Option<string?>("--out") { Description = "Model directory to write (default: models/metastone-tiny, or artifacts/metastone-tiny-smoke with --smoke)." };
        var work = new Option<string?>("--work") { Description = "Checkpoints and logs (default: artifacts/train/<name>). Re-running resumes from its checkpoint." };
        var seed = new Option<long?>("--seed") { Description = "Recipe seed (default: the recipe's)." };
        var policySteps = new Option<int?>("--policy-steps") { Description = "Override the number of policy training steps." };
        var evalProblems = new Option<int>("--eval-problems") { Description = "Held-out test problems for the model card (0 = skip evaluation).", DefaultValueFactory = _ => 500 };
        var recipeFile = new Option<string?>("--recipe") { Description = "A recipe JSON file (see the model card) instead of the built-in one." };
        var headOnly = new Option<bool>("--head-only") { Description = "Keep an existing policy and retrain only the SPRM head (sampling + head phases of the recipe)." };
        var policyDir = new Option<string?>("--policy") { Description = "With --head-only: the model directory whose policy is reused (default: the output directory)." };
        var preset = new Option<string?>("--preset") { Description = "A built-in recipe: full (the shipped two-family model, default), smoke, or chain-only (the earlier chain-only model)." };
        var probe = new Option<bool>("--probe") { Description = "The recipe's gate: sample like the head phase with the policy of --policy (default: the output directory) and train the oracle-label probe (docs/experiments/search-family-attempt.md); prints per-family dev figures and writes nothing to the model directory." };
        var json = JsonOutput.CreateOption();
        var command = new Command("train", "Train the tiny reflective model (policy + SPRM head) and write a Hugging Face style directory with its model card.")
        {
            smoke, output, work, seed, policySteps, evalProblems, recipeFile, preset, headOnly, policyDir, probe, json,
        };
        command.SetAction(async (parseResult, cancellationToken) =>
        {
            TrainingRecipe recipe;
            if (parseResult.GetValue(recipeFile) is string rf) recipe = TrainingRecipe.FromJson(File.ReadAllText(rf));
            else if (parseResult.GetValue(smoke)) recipe = TrainingRecipe.Smoke;
            else
            {
                switch (parseResult.GetValue(preset) ?? "full")
                {
                    case "full": recipe = TrainingRecipe.Full; break;
                    case "smoke": recipe = TrainingRecipe.Smoke; break;
                    case "chain-only": recipe = TrainingRecipe.ChainOnly; break;
                    case var other: Console.Error.WriteLine($"error: --preset must be full, smoke or chain-only, got '{other}'"); return 2;
                }
            }
            if (parseResult.GetValue(seed) is long s) recipe = recipe with { Seed = s };
            if (parseResult.GetValue(policySteps) is int ps) recipe = recipe with { PolicySteps = ps };
            string root = RepoPaths.FindRepoRoot() ?? Directory.GetCurrentDirectory();
            string outDir = parseResult.GetValue(output) ?? Path.Combine(root, parseResult.GetValue(smoke) ? "artifacts/metastone-tiny-smoke" : RepoPaths.TinyModelRelative);
            string workDir = parseResult.GetValue(work) ?? Path.Combine(root, "artifacts", "train", Path.GetFileName(Path.GetFullPath(outDir)));
            var stderr = Console.Error;
            bool onlyHead = parseResult.GetValue(headOnly);
            if (parseResult.GetValue(probe))
            {
                string probeFrom = parseResult.GetValue(policyDir) ?? outDir;
                if (!File.Exists(Path.Combine(probeFrom, "model.safetensors")))
                {
                    stderr.WriteLine($"error: --probe needs a trained policy: {Path.Combine(probeFrom, "model.safetensors")} not found");
                    return 2;
                }
                var probeBar = new ProgressLine();
                var lines = await new TinyModelBuilder(recipe).ProbeAsync(probeFrom, workDir, progress: probeBar.Report, cancellationToken: cancellationToken).ConfigureAwait(false);
                probeBar.End();
                File.WriteAllLines(Path.Combine(workDir, "oracle-probe.log"), lines);
                foreach (var line in lines) parseResult.InvocationConfiguration.Output.WriteLine(line);
                return 0;
            }
            string? policyFrom = onlyHead ? parseResult.GetValue(policyDir) ?? outDir : null;
            if (policyFrom is not null && !File.Exists(Path.Combine(policyFrom, "model.safetensors")))
            {
                stderr.WriteLine($"error: --head-only needs a trained policy: {Path.Combine(policyFrom, "model.safetensors")} not found");
                return 2;
            }
            if (!onlyHead && parseResult.GetValue(policyDir) is not null) { stderr.WriteLine("error: --policy only goes with --head-only or --probe"); return 2; }
            stderr.WriteLine($"[train] recipe {(parseResult.GetValue(smoke) ? "smoke" : parseResult.GetValue(preset) ?? "full")}: {recipe.Layers} layers × hidden {recipe.HiddenSize}, {recipe.PolicySteps} policy steps × batch {recipe.BatchSize}, SPRM on {recipe.SprProblems}×{recipe.SprSamplesPerProblem} samples; seed {recipe.Seed}{(policyFrom is null ? "" : $"; head only, policy from {policyFrom}")}");
            stderr.WriteLine($"[train] output {outDir}, work {workDir}");
            var bar = new ProgressLine();
            var clock = Stopwatch.StartNew();
            var builder = new TinyModelBuilder(recipe);
            var summary = policyFrom is null
                ? await builder.BuildAsync(outDir, workDir, bar.Report, cancellationToken).ConfigureAwait(false)
                : await builder.BuildHeadAsync(policyFrom, outDir, workDir, bar.Report, cancellationToken).ConfigureAwait(false);
            bar.End();
            stderr.WriteLine($"[train] built in {summary.Total:mm\\:ss} (policy {summary.PolicyTime:mm\\:ss}, sampling {summary.SamplingTime:mm\\:ss}, head {summary.HeadTime:mm\\:ss}); SPRM data: {summary.SprTrajectories} trajectories, {summary.SprSteps} steps, sample accuracy {summary.SprSampleAccuracy:P1}");

            EvalReport? report = null;
            int problems = parseResult.GetValue(evalProblems);
            if (problems > 0)
            {
                stderr.WriteLine($"[train] evaluating on {problems} held-out test problems × 32 samples");
                using var model = ReflectiveModel.Load(outDir, new ModelLoadOptions { MaxBatch = 128, MaxSequenceLength = recipe.MaxPositions });
                // A chain-only recipe is evaluated on chains only; a recipe that trains search too, on both families.
                var evalSet = TtsEvaluator.TestProblems(problems, family: recipe.SearchFraction > 0 ? null : MetaStone.Training.Tasks.TaskFamily.Chain);
                report = await TtsEvaluator.EvaluateAsync(model, evalSet, [1, 2, 4, 8, 16, 32], seed: 1,
                    progress: (d, a) => bar.Report(new TrainingProgress("eval", d, a, double.NaN, 0, 0, clock.Elapsed)),
                    cancellationToken: cancellationToken).ConfigureAwait(false);
                bar.End();
                File.WriteAllText(Path.Combine(outDir, "eval.json"), System.Text.Json.JsonSerializer.Serialize(report, JsonOutput.SerializerOptions));
            }
            string commandLine = "metastone train" + (parseResult.GetValue(smoke) ? " --smoke" : "") + (parseResult.GetValue(preset) is string pr ? $" --preset {pr}" : "") + (parseResult.GetValue(seed) is long sd ? $" --seed {sd}" : "")
                + (parseResult.GetValue(policySteps) is int p2 ? $" --policy-steps {p2}" : "")
                + (onlyHead ? " --head-only" + (parseResult.GetValue(policyDir) is string pd ? $" --policy {pd}" : "") : "")
                + (parseResult.GetValue(recipeFile) is string rf2 ? $" --recipe {rf2}" : "");
            ModelCard.Write(outDir, recipe, summary, report, commandLine);
            if (parseResult.GetValue(json)) JsonOutput.Write(parseResult.InvocationConfiguration.Output, new { summary, report });
            else if (report is not null) parseResult.InvocationConfiguration.Output.WriteLine(report.ToTable());
            return 0;
        });
        return command;
    }
}
