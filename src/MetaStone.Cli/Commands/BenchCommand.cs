using System.CommandLine;
using MetaStone.Bench;
using MetaStone.Model.Generation;
using MetaStone.Reasoning;

namespace MetaStone.Cli.Commands;

/// <summary><c>metastone bench engine | cluster | load | gateway | peer</c>: benchmarks built on the same code users run (their logic is in MetaStone.Bench; the verbs parse options).</summary>
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
            EngineBenchReport report;
            try
            {
                report = await EngineBenchmark.RunShapesAsync(selected, shape => new EngineBenchSettings
                {
                    Candidates = candidates,
                    NewTokens = tokens ?? shape.DefaultNewTokens,
                    SequentialCandidates = sequentialCount ?? Math.Min(candidates, shape.DefaultSequentialCandidates ?? candidates),
                    TopP = nucleus,
                }, error, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                error.WriteLine("metastone bench engine: cancelled");
                return GenerateCommand.CancelledExitCode;
            }

            if (parseResult.GetValue(outFile) is { } file)
            {
                using var writer = new StreamWriter(file.FullName);
                JsonOutput.Write(writer, report);
            }
            if (parseResult.GetValue(json)) JsonOutput.Write(output, report);
            else foreach (var line in report.ToLines()) output.WriteLine(line);
            return 0;
        });
        return command;
    }
}
