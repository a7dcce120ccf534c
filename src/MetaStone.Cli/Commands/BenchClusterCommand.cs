using System.CommandLine;
using MetaStone.Bench;
using MetaStone.Cli.Cluster;
using MetaStone.Cli.Training;

namespace MetaStone.Cli.Commands;

/// <summary><c>metastone bench cluster</c>: orchestration overhead, horizontal scaling with a simulated GPU engine, real tiny model 1 vs 2 silos.</summary>
/// <remarks>A subcommand of <see cref="BenchCommand"/>.</remarks>
internal static class BenchClusterCommand
{
    public static Command Create()
    {
        var silos = new Option<string>("--silos") { Description = "Comma-separated silo counts for the scaling run.", DefaultValueFactory = _ => "1,2,4,8,16" };
        var redis = new Option<string?>("--redis") { Description = "Use this Redis instead of starting a private redis-server.", HelpName = "host:port" };
        var model = new Option<string?>("--model") { Description = "Model for the real-model run (default: models/metastone-tiny)." };
        var stepMs = new Option<double>("--step-ms") { Description = "Simulated engine: fixed latency of a decode step.", DefaultValueFactory = _ => 10 };
        var seqMs = new Option<double>("--per-sequence-ms") { Description = "Simulated engine: added latency per sequence in the batch.", DefaultValueFactory = _ => 2 };
        var slots = new Option<int>("--slots") { Description = "Simulated engine: batch slots per silo (a GPU's capacity).", DefaultValueFactory = _ => 4 };
        var tokens = new Option<int>("--tokens") { Description = "Simulated engine: tokens per candidate.", DefaultValueFactory = _ => 32 };
        var skipScaling = new Option<bool>("--skip-scaling") { Description = "Only measure the orchestration overhead (and the real model)." };
        var skipReal = new Option<bool>("--skip-real-model");
        var json = JsonOutput.CreateOption();
        var cluster = new Command("cluster", "Cluster overhead per job and per candidate, scaling over silo processes, real model 1 vs 2 silos.")
        {
            silos, redis, model, stepMs, seqMs, slots, tokens, skipScaling, skipReal, json,
        };
        cluster.SetAction((parse, ct) => ClusterVerb.RunAsync(parse, async () =>
        {
            int[] counts;
            try { counts = parse.GetValue(silos)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToArray(); }
            catch (FormatException) { throw new ArgumentException($"--silos expects comma-separated integers, got '{parse.GetValue(silos)}'"); }
            if (counts.Length == 0 || counts.Any(c => c < 1 || c > 64)) throw new ArgumentException("every silo count must be between 1 and 64");
            var settings = new BenchSettings
            {
                SiloCounts = counts, Redis = parse.GetValue(redis), Model = parse.GetValue(model) ?? RepoPaths.DefaultModel,
                StepMilliseconds = parse.GetValue(stepMs), PerSequenceMilliseconds = parse.GetValue(seqMs),
                SlotsPerSilo = parse.GetValue(slots), TokensPerCandidate = parse.GetValue(tokens),
                SkipScaling = parse.GetValue(skipScaling), SkipRealModel = parse.GetValue(skipReal),
            };
            var report = await ClusterBenchmark.RunAsync(settings, line => Console.Error.WriteLine(line), ct);
            if (parse.GetValue(json)) JsonOutput.Write(parse.InvocationConfiguration.Output, report);
            else parse.InvocationConfiguration.Output.Write(report.ToTable());
            return 0;
        }));
        return cluster;
    }
}
