using System.CommandLine;
using MetaStone.Bench;
using MetaStone.Model;
using MetaStone.Model.Generation;
using MetaStone.Reasoning;

namespace MetaStone.Cli.Commands;

/// <summary><c>metastone bench engine …</c> and <c>metastone bench cluster …</c>: benchmarks built on the same code users run.</summary>
public sealed class BenchCommand : ICliVerb
{
    public const int UsageErrorExitCode = 2;

    public static Command Create()
    {
        var command = new Command("bench", "Performance measurements on this machine.");
        command.Add(CreateEngineCommand());
        command.Add(BenchClusterCommand.Create());
        command.Add(BenchLoadCommand.Create());
        command.Add(BenchGatewayCommand.Create());
        command.Add(BenchPeerCommand.Create());
        return command;
    }

    private static Command CreateEngineCommand()
    {
        var shapes = new Option<string>("--shapes")
        {
            Description = $"Comma-separated model shapes with random weights: {string.Join(", ", BenchModelShape.Names)}.",
            DefaultValueFactory = _ => string.Join(",", BenchModelShape.Names),
        };
        var n = new Option<int>("--n") { Description = "Candidates decoded together (one request, MaxBatch n).", DefaultValueFactory = _ => 32 };
        var newTokens = new Option<int?>("--new-tokens") { Description = "Tokens per candidate (default: 128 for tiny, 16 for qwen2-0.5b)." };
        var sequential = new Option<int?>("--sequential") { Description = "Candidates of the one-after-another baseline (default: n for tiny, 8 for qwen2-0.5b)." };
        var topP = new Option<double>("--top-p")
        {
            Description = "Nucleus mass of the sampling (MetaStone default 0.95). Random weights give nearly flat distributions, for which "
                + "top-p < 1 sorts the whole vocabulary every step; 1 measures the engine without that random-weights artefact.",
            DefaultValueFactory = _ => new SamplingOptions().TopP,
        };
        var threads = new Option<int?>("--threads") { Description = "torch intra-op threads (default: torch's choice, one per core)." };
        var tinyLayers = new Option<int?>("--tiny-layers") { Description = "Layers of the tiny shape (default 4; fewer for quick checks)." };
        var json = JsonOutput.CreateOption();
        var outFile = new Option<FileInfo?>("--out") { Description = "Also write the JSON report to this file.", HelpName = "FILE.json" };

        var command = new Command("engine",
            "Generation engine on random-weight models: batched vs sequential decode, shared-prefix prefill, in-flight SPRM scoring overhead, decode FLOP/s vs matmul.")
        {
            shapes, n, newTokens, sequential, topP, threads, tinyLayers, json, outFile,
        };
        command.SetAction(async (parseResult, cancellationToken) =>
        {
            var output = parseResult.InvocationConfiguration.Output;
            var error = parseResult.InvocationConfiguration.Error;
            int candidates = parseResult.GetValue(n);
            int? tokens = parseResult.GetValue(newTokens), sequentialCount = parseResult.GetValue(sequential), layers = parseResult.GetValue(tinyLayers);
            int? threadCount = parseResult.GetValue(threads);
            double nucleus = parseResult.GetValue(topP);
            List<BenchModelShape> selected;
            try
            {
                if (candidates < 2 || candidates > EffortMode.MaxK) throw new ArgumentException($"--n must be between 2 and {EffortMode.MaxK}, got {candidates}");
                if (tokens is < 2) throw new ArgumentException($"--new-tokens must be at least 2 (one decode step), got {tokens}");
                if (sequentialCount is < 1) throw new ArgumentException($"--sequential must be at least 1, got {sequentialCount}");
                if (!(nucleus > 0 && nucleus <= 1)) throw new ArgumentException($"--top-p must be in (0, 1], got {nucleus}");
                if (threadCount is < 1) throw new ArgumentException($"--threads must be at least 1, got {threadCount}");
                if (layers is < 1) throw new ArgumentException($"--tiny-layers must be at least 1, got {layers}");
                selected = (parseResult.GetValue(shapes) ?? "")
                    .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                    .Distinct()
                    .Select(name => BenchModelShape.Create(name, layers))
                    .ToList();
                if (selected.Count == 0) throw new ArgumentException($"--shapes is empty (valid: {string.Join(", ", BenchModelShape.Names)})");
            }
            catch (ArgumentException e)
            {
                error.WriteLine($"metastone bench engine: {e.Message.Split(" (Parameter '")[0]}");
                return UsageErrorExitCode;
            }

            if (threadCount is int count) TorchSharp.torch.set_num_threads(count);
            // Other jobs on a shared machine slow every number down (and 2-thread ops stall when one thread is
            // descheduled): the load average before and after tells a reader how much to trust the run.
            string loadBefore = BenchMachine.LoadAverage();
            var reports = new List<ShapeReport>();
            try
            {
                foreach (var shape in selected)
                {
                    var settings = new EngineBenchSettings
                    {
                        Candidates = candidates,
                        NewTokens = tokens ?? shape.DefaultNewTokens,
                        SequentialCandidates = sequentialCount ?? Math.Min(candidates, shape.DefaultSequentialCandidates ?? candidates),
                        TopP = nucleus,
                    };
                    reports.Add(await new EngineBenchmark(shape, settings, error).RunAsync(cancellationToken).ConfigureAwait(false));
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                error.WriteLine("metastone bench engine: cancelled");
                return GenerateCommand.CancelledExitCode;
            }

            var report = new EngineBenchReport(BenchMachine.Description(), TorchSharp.torch.get_num_threads(), CpuFeatures.HasFastBf16,
                loadBefore, BenchMachine.LoadAverage(), reports);
            if (parseResult.GetValue(outFile) is { } file)
            {
                using var writer = new StreamWriter(file.FullName);
                JsonOutput.Write(writer, report);
            }
            if (parseResult.GetValue(json)) JsonOutput.Write(output, report);
            else WriteTable(output, report);
            return 0;
        });
        return command;
    }

    // InvariantGlobalization is on (Directory.Build.props), so number formatting is culture-invariant.
    private static void WriteTable(TextWriter output, EngineBenchReport report)
    {
        var shapes = report.Shapes;
        var rows = new List<(string Label, Func<ShapeReport, string> Value)>
        {
            ("dtype", s => s.Dtype),
            ("decoder params (incl. LM head)", s => $"{s.DecoderParameters / 1e6:F1} M"),
            ("candidates n / sequential / prompt / new tokens", s => $"{s.Candidates} / {s.SequentialCandidates} / {s.PromptTokens} / {s.NewTokens}"),
            ("1. batched decode tok/s", s => $"{s.Batching.BatchedDecodeTokensPerSecond:F1} ({s.Batching.BatchedEngineStepMilliseconds:F1} ms/step)"),
            ("   sequential decode tok/s", s => $"{s.Batching.SequentialDecodeTokensPerSecond:F1} ({s.Batching.SequentialEngineStepMilliseconds:F1} ms/step)"),
            ("   decode speedup (target)", s => $"{s.Batching.DecodeSpeedup:F1}×" + (s.Batching.Target is double t ? $" (≥ {t:F0}×: {(s.Batching.DecodeSpeedup >= t ? "met" : "MISSED")})" : "")),
            ("   end-to-end speedup (incl. prefill)", s => $"{s.Batching.EndToEndSpeedup:F1}×"),
            ("2. prefill tokens shared / separate", s => $"{s.Prefill.SharedTokensComputed} / {s.Prefill.SeparateTokensComputed} (= {s.Prefill.Ratio:F0}×)"),
            ("   first token shared / separate", s => $"{s.Prefill.SharedFirstTokenSeconds * 1000:F0} / {s.Prefill.SeparateFirstTokenSeconds * 1000:F0} ms (saved {s.Prefill.SavedSeconds * 1000:F0} ms)"),
            ("3. batched wall scored / unscored", s => $"{s.Scoring.ScoredSeconds:F2} / {s.Scoring.UnscoredSeconds:F2} s"),
            ("   in-flight scoring overhead (target)", s => $"{s.Scoring.OverheadPercent:+0.0;-0.0}% (≤ {s.Scoring.TargetOverheadPercent:F0}%: {(s.Scoring.OverheadPercent <= s.Scoring.TargetOverheadPercent ? "met" : "MISSED")})"),
            ("   steps scored in flight / re-encoded", s => $"{s.Scoring.StepsScored} / {s.Scoring.ReencodeStepsScored}"),
            ("   generate + re-encode wall", s => $"{s.Scoring.ReencodePipelineSeconds:F2} s (re-encode {s.Scoring.ReencodeSeconds:F2} s = +{s.Scoring.ReencodeOverheadPercent:F0}%)"),
            ("   in-flight vs re-encode pipeline", s => $"{s.Scoring.InFlightSpeedupOverReencode:F2}× faster"),
            ("4. decode GFLOP/s (dense / +attention)", s => $"{s.Compute.DecodeFlopsPerSecond / 1e9:F1} / {s.Compute.DecodeFlopsPerSecondWithAttention / 1e9:F1}"),
            ("   matmul GFLOP/s (LM head shape, M = n)", s => $"{s.Compute.MatmulFlopsPerSecond / 1e9:F1} ({s.Compute.MatmulMilliseconds:F2} ms)"),
            ("   decode / matmul", s => $"{100 * s.Compute.FractionOfMatmul:F0}% ({100 * s.Compute.FractionOfMatmulWithAttention:F0}% with attention)"),
            ("   bare forward step B=n / B=1", s => $"{s.Compute.ForwardStepMillisecondsBatched:F1} / {s.Compute.ForwardStepMillisecondsSingle:F1} ms"),
            ("   engine step B=n / B=1 (forward+sampling)", s => $"{s.Batching.BatchedEngineStepMilliseconds:F1} / {s.Batching.SequentialEngineStepMilliseconds:F1} ms"),
            ("bench wall time", s => $"{s.TotalSeconds:F0} s"),
        };
        output.WriteLine($"metastone bench engine: {report.Machine}, torch threads {report.TorchThreads}, fast bf16 {(report.FastBf16 ? "yes" : "no")}, load average {report.LoadAverageBefore} before, {report.LoadAverageAfter} after");
        foreach (var s in shapes)
            output.WriteLine($"  {s.Shape}: {s.Dtype}, {s.DtypeNote}; {s.Sampling}; {100 * s.StepTokenFraction:F1}% of ids are step tokens, <think> ends the prompt");
        int labelWidth = rows.Max(r => r.Label.Length);
        var columns = shapes.Select(s => rows.Select(r => r.Value(s)).ToList()).ToList();
        var widths = shapes.Select((s, i) => Math.Max(s.Shape.Length, columns[i].Max(v => v.Length))).ToList();
        output.WriteLine();
        output.WriteLine("".PadRight(labelWidth) + string.Concat(shapes.Select((s, i) => " | " + s.Shape.PadRight(widths[i]))));
        output.WriteLine(new string('-', labelWidth) + string.Concat(widths.Select(w => "-+-" + new string('-', w))));
        for (int r = 0; r < rows.Count; r++)
            output.WriteLine(rows[r].Label.PadRight(labelWidth) + string.Concat(shapes.Select((s, i) => " | " + columns[i][r].PadRight(widths[i]))));
    }
}
