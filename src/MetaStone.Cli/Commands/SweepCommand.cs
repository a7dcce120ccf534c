using System.CommandLine;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using MetaStone.Cli.Cluster;
using MetaStone.Cli.Sweeps;
using MetaStone.Cli.Training;
using MetaStone.Client;
using MetaStone.Contracts;
using MetaStone.Training;
using MetaStone.Training.Tasks;

namespace MetaStone.Cli.Commands;

/// <summary>
/// <c>metastone sweep [--dataset FILE.jsonl] --k 1,2,4,8,16,32 --budgets 64,128,256 --seeds 5 [--cluster REDIS] [--out DIR]</c>:
/// a scaling-law sweep (accuracy vs total thinking compute) run as a resumable cluster job; <c>--watch ID</c>
/// follows one that runs already. Without a cluster it runs on an embedded single-silo cluster.
/// </summary>
public sealed class SweepCommand : ICliVerb
{
    public static Command Create()
    {
        var dataset = new Option<string?>("--dataset") { Description = "JSONL file of {prompt, answer} rows (default: the tiny task's test split)." };
        var problems = new Option<int?>("--problems") { Description = "Use the first N problems (default: all of a --dataset file, 100 of the test split)." };
        var family = new Option<string>("--family") { Description = "Without --dataset: task family of the test-split problems, chain, search or all (alternating).", DefaultValueFactory = _ => "chain" };
        var ks = new Option<string>("--k") { Description = "k values to report; the largest is generated once per problem and budget, smaller ones are subsampled.", DefaultValueFactory = _ => "1,2,4,8,16,32" };
        var budgets = new Option<string>("--budgets") { Description = "Thinking budgets in tokens ('none' = unlimited).", DefaultValueFactory = _ => "16,32,64,128" };
        var seeds = new Option<int>("--seeds") { Description = "Subsampling seeds per smaller k.", DefaultValueFactory = _ => 5 };
        var concurrency = new Option<int>("--concurrency") { Description = "Items (problem × budget jobs of k_max candidates) running at once; 0 = enough to fill every replica's batch slots.", DefaultValueFactory = _ => 0 };
        var seed = new Option<long>("--seed") { Description = "Generation seed (problem i uses seed + 1000·i).", DefaultValueFactory = _ => 1 };
        // --max-new-tokens, --temperature, --top-p, --repetition-penalty: the sampling options of ask, submit and generate.
        var sampling = new SamplingCliOptions();
        var id = new Option<string?>("--id") { Description = "Sweep id (default: derived from the settings, so re-running the same command resumes the same sweep)." };
        var watch = new Option<string?>("--watch") { Description = "Follow the sweep with this id (started earlier, maybe by another machine) and write its report when it ends." };
        var detach = new Option<bool>("--detach") { Description = "With --cluster: start the sweep, print its id and exit; it runs on in the cluster." };
        var output = new Option<string?>("--out") { Description = "Report directory (default: artifacts/sweeps/<id>)." };
        var model = new Option<string?>("--model") { Description = "Model directory of the embedded silo (default: models/metastone-tiny)." };
        var device = new Option<string>("--device") { Description = "Device of the embedded silo: cpu, cuda:N.", DefaultValueFactory = _ => "cpu" };
        var stateDir = new Option<string?>("--state-dir") { Description = "Embedded mode: where finished items are kept so re-running resumes (default: artifacts/sweeps/.state)." };
        var cancel = new Option<string?>("--cancel") { Description = "Cancel the sweep with this id in the cluster (finished items stay stored; starting it again resumes)." };
        var reanalyse = new Option<string?>("--reanalyse") { Description = "Recompute points, fits and plots from a report directory (its sweep.json + items.jsonl), e.g. with other --k or --seeds; no cluster needed." };
        var maxBatch = new Option<int>("--max-batch") { Description = "Sequences the embedded silo's engine batches at once.", DefaultValueFactory = _ => 64 };
        var cluster = new ClusterCliOptions();
        var json = JsonOutput.CreateOption();
        var command = new Command("sweep", "Scaling-law sweep: accuracy of SPRM Best-of-N, majority vote, weighted vote, random pick and oracle vs total thinking compute, fitted as a + b·ln C; CSV, JSON and PNG plots.")
        {
            dataset, problems, family, ks, budgets, seeds, concurrency, seed, id, watch, detach, cancel, output, model, device, maxBatch, stateDir, reanalyse, json,
        };
        sampling.AddTo(command);
        cluster.AddTo(command);
        command.SetAction((parse, ct) => ClusterVerb.RunAsync(parse, async () =>
        {
            var connection = cluster.Connection(parse);
            string? watchId = parse.GetValue(watch);
            if (watchId is not null)
            {
                if (connection is null) throw new ArgumentException("--watch needs the cluster the sweep runs on: pass --cluster host:port");
                await using var watcher = await MetaStoneClient.ConnectAsync(connection, ct);
                return await FollowAndReportAsync(watcher, watchId, parse.GetValue(output), parse, json, ct);
            }

            if (parse.GetValue(reanalyse) is string from)
            {
                var previous = System.Text.Json.JsonSerializer.Deserialize<SweepSummary>(File.ReadAllText(Path.Combine(from, "sweep.json")), JsonOutput.SerializerOptions)
                    ?? throw new ArgumentException($"{from}/sweep.json is empty");
                var items = File.ReadLines(Path.Combine(from, "items.jsonl")).Where(l => l.Length > 0)
                    .Select(l => System.Text.Json.JsonSerializer.Deserialize<SweepItemResult>(l, JsonOutput.SerializerOptions)!).ToList();
                var redoKs = parse.GetResult(ks) is null ? previous.Ks : ParseList(parse.GetValue(ks)!, "--k", allowNone: false).Select(k => k!.Value).ToList();
                int redoSeeds = parse.GetResult(seeds) is null ? previous.SubsampleSeeds : parse.GetValue(seeds);
                if (redoKs.Max() > previous.CandidatesPerItem)
                    Console.Error.WriteLine($"note: k = {redoKs.Max()} exceeds the {previous.CandidatesPerItem} candidates generated per item; those points use all of them (problems_short)");
                var summary = SweepOutput.Analyse(previous.SweepId, previous.Description, previous.Problems, redoKs, previous.Budgets, redoSeeds, previous.Model, items);
                return WriteReport(summary, items, parse.GetValue(output) ?? from, parse, json);
            }

            if (parse.GetValue(cancel) is string cancelId)
            {
                if (connection is null) throw new ArgumentException("--cancel needs the cluster the sweep runs on: pass --cluster host:port");
                await using var canceller = await MetaStoneClient.ConnectAsync(connection, ct);
                var cancelled = await canceller.CancelSweepAsync(cancelId, "cancelled with metastone sweep --cancel", ct);
                Console.Error.WriteLine($"sweep {cancelId}: {cancelled.State.ToString().ToLowerInvariant()} with {cancelled.FinishedItems}/{cancelled.TotalItems} items finished");
                return 0;
            }

            var request = BuildRequest(parse.GetValue(dataset), parse.GetValue(problems), parse.GetValue(ks)!, parse.GetValue(budgets)!,
                parse.GetValue(seeds), parse.GetValue(concurrency), parse.GetValue(seed), sampling.Settings(parse), parse.GetValue(family)!);
            string sweepId = parse.GetValue(id) ?? DefaultId(request);
            if (parse.GetValue(detach) && connection is null) throw new ArgumentException("--detach needs --cluster: an embedded sweep ends with this process");

            EmbeddedCluster? embedded = null;
            MetaStoneClient client;
            if (connection is not null) client = await MetaStoneClient.ConnectAsync(connection, ct);
            else
            {
                // Finished items go to files, so re-running this command after a crash or Ctrl-C resumes the sweep.
                string state = parse.GetValue(stateDir) ?? Path.Combine(RepoPaths.FindRepoRoot() ?? Directory.GetCurrentDirectory(), "artifacts", "sweeps", ".state");
                embedded = await EmbeddedCluster.StartAsync(parse.GetValue(model), parse.GetValue(device)!, parse.GetValue(maxBatch), ct, state);
                client = embedded.Client;
            }
            try
            {
                var status = await client.StartSweepAsync(sweepId, request, ct);
                Console.Error.WriteLine($"sweep {sweepId}: {status.TotalItems} items ({request.Problems.Count} problems × {request.Budgets.Count} budgets) × {request.KMax} candidates, " +
                    $"{status.FinishedItems} already finished; model {status.Model?.Name} ({status.Model?.PolicyParameters:N0} parameters)");
                if (parse.GetValue(detach))
                {
                    parse.InvocationConfiguration.Output.WriteLine(sweepId);
                    Console.Error.WriteLine($"running in the cluster; follow it with: metastone sweep --watch {sweepId} --cluster {connection!.Redis}");
                    return 0;
                }
                try
                {
                    return await FollowAndReportAsync(client, sweepId, parse.GetValue(output), parse, json, ct);
                }
                catch (OperationCanceledException) when (ct.IsCancellationRequested)
                {
                    if (embedded is not null)
                        throw new OperationCanceledException($"sweep {sweepId} interrupted; its finished items are kept: run the same command again to resume");
                    throw new OperationCanceledException($"stopped following sweep {sweepId}; it runs on in the cluster: metastone sweep --watch {sweepId} --cluster {connection!.Redis}");
                }
            }
            finally
            {
                if (embedded is not null) await embedded.DisposeAsync();
                else await client.DisposeAsync();
            }
        }));
        return command;
    }

    private static async Task<int> FollowAndReportAsync(MetaStoneClient client, string sweepId, string? outDir, ParseResult parse, Option<bool> json, CancellationToken ct)
    {
        var progress = new SweepProgressLine();
        SweepStatus? last = null;
        await foreach (var status in client.WatchSweepAsync(sweepId, ct))
        {
            progress.Report(status);
            last = status;
        }
        progress.End();
        if (last is null || last.State != SweepState.Completed)
            throw new InvalidOperationException($"sweep {sweepId} {last?.State.ToString().ToLowerInvariant()}: {last?.Error}; finished items are kept — run the same command again to resume");
        var request = await client.GetSweepRequestAsync(sweepId, ct);
        var items = await client.GetSweepItemsAsync(sweepId, ct);
        var summary = SweepOutput.Analyse(sweepId, request, last.Model ?? throw new InvalidOperationException("the sweep did not record its model"), items);
        string dir = outDir ?? Path.Combine(RepoPaths.FindRepoRoot() ?? Directory.GetCurrentDirectory(), "artifacts", "sweeps", sweepId);
        return WriteReport(summary, items, dir, parse, json);
    }

    private static int WriteReport(SweepSummary summary, IReadOnlyList<SweepItemResult> items, string dir, ParseResult parse, Option<bool> json)
    {
        Directory.CreateDirectory(dir);
        SweepOutput.WriteCsv(Path.Combine(dir, "points.csv"), summary.Points);
        SweepOutput.WriteFitsCsv(Path.Combine(dir, "fits.csv"), summary);
        SweepOutput.WriteItems(Path.Combine(dir, "items.jsonl"), items);
        File.WriteAllText(Path.Combine(dir, "sweep.json"), System.Text.Json.JsonSerializer.Serialize(summary, JsonOutput.SerializerOptions));
        var plots = SweepPlots.Write(dir, summary);
        if (parse.GetValue(json)) JsonOutput.Write(parse.InvocationConfiguration.Output, summary);
        else parse.InvocationConfiguration.Output.WriteLine(SweepOutput.Table(summary));
        Console.Error.WriteLine($"report: {dir} (points.csv, fits.csv, sweep.json, items.jsonl, {string.Join(", ", plots.Select(Path.GetFileName))})");
        return 0;
    }

    public static SweepRequest BuildRequest(string? datasetFile, int? problemCount, string ks, string budgets, int seeds, int concurrency, long seed,
        SamplingSettings sampling, string family = "chain")
    {
        if (problemCount is < 1) throw new ArgumentException($"--problems must be ≥ 1 (got {problemCount})");
        IReadOnlyList<TaskExample> rows;
        if (datasetFile is not null)
        {
            if (!File.Exists(datasetFile)) throw new ArgumentException($"dataset not found: {datasetFile}");
            rows = TaskJsonl.ReadFile(datasetFile);
            if (problemCount is int n) rows = rows.Take(n).ToList();
        }
        else rows = family == "all" ? TtsEvaluator.TestProblemsMixed(problemCount ?? 100) : TtsEvaluator.TestProblems(problemCount ?? 100, family: TaskSuite.ParseFamily(family));
        return new SweepRequest
        {
            Problems = rows.Select(r => new SweepProblem(r.Prompt, r.Answer, r.Id)).ToList(),
            Ks = ParseList(ks, "--k", allowNone: false).Select(k => k!.Value).ToList(),
            Budgets = ParseList(budgets, "--budgets", allowNone: true),
            SubsampleSeeds = seeds,
            MaxConcurrentItems = concurrency,
            Seed = seed,
            Sampling = sampling,
            Description = datasetFile is null ? $"tiny task test split, {rows.Count} problems" : $"{Path.GetFileName(datasetFile)}, {rows.Count} problems",
        };
    }

    public static List<int?> ParseList(string text, string option, bool allowNone)
    {
        var values = new List<int?>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (allowNone && part.Equals("none", StringComparison.OrdinalIgnoreCase)) values.Add(null);
            else if (int.TryParse(part, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v)) values.Add(v);
            else throw new ArgumentException($"{option} expects comma-separated integers{(allowNone ? " or 'none'" : "")}, got '{part}'");
        }
        if (values.Count == 0) throw new ArgumentException($"{option} is empty");
        return values;
    }

    /// <summary>A stable id from everything that defines the sweep, so the same command finds (and resumes) the same sweep.</summary>
    public static string DefaultId(SweepRequest request)
    {
        string canonical = System.Text.Json.JsonSerializer.Serialize(request with { Description = null, MaxConcurrentItems = 0 });
        return "sweep-" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(canonical)))[..12];
    }
}

/// <summary>One progress line for a sweep on stderr: items done, running, rate and ETA.</summary>
internal sealed class SweepProgressLine
{
    private readonly bool _interactive = !Console.IsErrorRedirected;
    private bool _open;
    private DateTime _lastLine = DateTime.MinValue;
    private int _lastPercent = -100;

    public void Report(SweepStatus s)
    {
        // In a log (not a terminal) print one line per 5 % or per 30 s, and the last one.
        int whole = s.TotalItems == 0 ? 100 : 100 * s.FinishedItems / s.TotalItems;
        if (!_interactive && !s.IsTerminal && whole - _lastPercent < 5 && DateTime.UtcNow - _lastLine < TimeSpan.FromSeconds(30)) return;
        _lastPercent = whole;
        _lastLine = DateTime.UtcNow;
        double percent = s.TotalItems == 0 ? 100 : 100.0 * s.FinishedItems / s.TotalItems;
        const int width = 24;
        int filled = (int)(width * percent / 100);
        string eta = s.EtaSeconds is double e ? $" eta {TimeSpan.FromSeconds(e):hh\\:mm\\:ss}" : "";
        string rate = s.RunSeconds > 0 && s.FinishedThisRun > 0 ? $" {60 * s.FinishedThisRun / s.RunSeconds:F1} items/min" : "";
        string line = $"[sweep] {new string('█', filled)}{new string('░', width - filled)} {s.FinishedItems}/{s.TotalItems} items ({percent:F1} %), {s.ProblemsFinished}/{s.Problems} problems, {s.RunningItems} running,{rate}{eta} [{s.State.ToString().ToLowerInvariant()}]";
        if (_interactive)
        {
            Console.Error.Write("\r" + line.PadRight(110));
            _open = true;
        }
        else Console.Error.WriteLine(line);
    }

    public void End()
    {
        if (_open) Console.Error.WriteLine();
        _open = false;
    }
}
