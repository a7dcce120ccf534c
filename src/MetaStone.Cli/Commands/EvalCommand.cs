using System.CommandLine;
using MetaStone.Cli.Training;
using MetaStone.Model;
using MetaStone.Model.Generation;
using MetaStone.Training;
using MetaStone.Training.Tasks;
using MetaStone.Training.Trainers;

namespace MetaStone.Cli.Commands;

/// <summary><c>metastone eval --model DIR --k 1,2,4,8,16,32 --problems N [--family chain|search|all] [--dataset FILE.jsonl] [--json]</c>.</summary>
public sealed class EvalCommand : ICliVerb
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "Model directory (default: models/metastone-tiny)." };
        var ks = new Option<string>("--k") { Description = "Comma-separated k values.", DefaultValueFactory = _ => "1,2,4,8,16,32" };
        var problems = new Option<int>("--problems") { Description = "Number of held-out test problems per family.", DefaultValueFactory = _ => 500 };
        var family = new Option<string>("--family") { Description = "Task family of the held-out problems: chain (what the shipped model is trained on), search or all.", DefaultValueFactory = _ => "chain" };
        var dataset = new Option<string?>("--dataset") { Description = "JSONL file of {prompt, answer} (default: the tiny task's test split)." };
        var seed = new Option<long>("--seed") { DefaultValueFactory = _ => 1 };
        // A workload size, not a sampling default (the cluster verbs' 1024): eval generates k up to 32 for hundreds of problems
        // on the local engine, so it keeps its own, shorter limit.
        var maxNew = new Option<int>("--max-new-tokens") { DefaultValueFactory = _ => 256 };
        var dump = new Option<string?>("--dump") { Description = "Also write every sample to this JSONL file: prompt, expected answer, candidate, score, correct, answer, text." };
        var json = JsonOutput.CreateOption();
        var command = new Command("eval", "Evaluate test-time scaling: pass@1, SPRM Best-of-N / majority / weighted vote / random / oracle at each k, SPRM AUROC.")
        {
            model, ks, problems, family, dataset, seed, maxNew, dump, json,
        };
        command.SetAction(async (parseResult, cancellationToken) =>
        {
            int[] kList;
            try { kList = parseResult.GetValue(ks)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToArray(); }
            catch (FormatException) { Console.Error.WriteLine($"error: --k expects comma-separated integers, got '{parseResult.GetValue(ks)}'"); return 2; }
            if (kList.Length == 0 || kList.Any(k => k < 1 || k > 256)) { Console.Error.WriteLine("error: every k must be between 1 and 256"); return 2; }
            string dir = parseResult.GetValue(model) ?? RepoPaths.DefaultModel;
            if (!Directory.Exists(dir)) { Console.Error.WriteLine($"error: model directory not found: {dir} (train one with 'metastone train' or pass --model)"); return 2; }
            int n = parseResult.GetValue(problems);
            if (n < 1) { Console.Error.WriteLine("error: --problems must be at least 1"); return 2; }
            TaskFamily? only;
            try { only = parseResult.GetValue(family) is "all" ? null : TaskSuite.ParseFamily(parseResult.GetValue(family)!); }
            catch (ArgumentException e) { Console.Error.WriteLine($"error: --family: {e.Message}"); return 2; }
            var items = parseResult.GetValue(dataset) is string file
                ? TaskJsonl.ReadFile(file).Where(e => only is null || TaskSuite.FamilyOfPrompt(e.Prompt) == only).Take(n).ToList()
                : TtsEvaluator.TestProblems(n, family: only);
            if (items.Count == 0) { Console.Error.WriteLine("error: no problems to evaluate (check --dataset and --family)"); return 2; }
            ReflectiveModel loaded;
            try { loaded = ReflectiveModel.Load(dir, new ModelLoadOptions { MaxBatch = 128, MaxSequenceLength = 512 }); }
            catch (ModelLoadException e) { Console.Error.WriteLine($"error: {e.Message}"); return 2; }
            using var reflective = loaded;
            var bar = new ProgressLine();
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var report = await TtsEvaluator.EvaluateAsync(reflective, items, kList, parseResult.GetValue(seed),
                new SamplingOptions { MaxNewTokens = parseResult.GetValue(maxNew) },
                (d, a) => bar.Report(new TrainingProgress("eval", d, a, double.NaN, 0, 0, clock.Elapsed)), cancellationToken).ConfigureAwait(false);
            bar.End();
            if (parseResult.GetValue(dump) is string dumpFile)
            {
                using var writer = new StreamWriter(dumpFile);
                foreach (var (problem, samples) in report.Samples)
                    for (int i = 0; i < samples.Count; i++)
                        writer.WriteLine(System.Text.Json.JsonSerializer.Serialize(new
                        {
                            prompt = problem.Prompt, expected = problem.Answer, candidate = i, score = samples[i].Candidate.Score,
                            correct = samples[i].Candidate.Correct, answer = samples[i].Candidate.Answer, finished = samples[i].Finished, text = samples[i].Text,
                        }));
            }
            if (parseResult.GetValue(json)) JsonOutput.Write(parseResult.InvocationConfiguration.Output, report);
            else parseResult.InvocationConfiguration.Output.WriteLine(report.ToTable());
            return 0;
        });
        return command;
    }
}
