using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using MetaStone.Model.Tokenization;

namespace MetaStone.Bench.Peer;

/// <summary>What <c>metastone bench peer</c> runs.</summary>
public sealed record PeerBenchSettings
{
    /// <summary>Where the random checkpoint is written once and reused (safetensors directory + two GGUF files).</summary>
    public required string CheckpointDirectory { get; init; }
    /// <summary>Holds Qwen's tokenizer.json (tests/.cache/qwen-tokenizer/…/models after tests/tools/fetch-qwen-tokenizer.sh).</summary>
    public required string TokenizerDirectory { get; init; }
    /// <summary>The cache tests/tools/peer/fetch-node-llama-cpp.sh fills (node_modules/node-llama-cpp).</summary>
    public required string NodeLlamaCppDirectory { get; init; }
    /// <summary>tests/tools/peer/llama-cpp-peer.mjs.</summary>
    public required string NodeScript { get; init; }
    /// <summary>How to start this CLI in a fresh process (the executable and the arguments before the verb).</summary>
    public required string CliExecutable { get; init; }
    public IReadOnlyList<string> CliPrefixArguments { get; init; } = [];
    public string Prompt { get; init; } = "Compute 47 + 85 - 29 * 3 from left to right.";
    public int NewTokens { get; init; } = 32;
    public int Sequences { get; init; } = 32;
    public double Temperature { get; init; } = 0.8;
    public double TopP { get; init; } = 0.95;
    public int Threads { get; init; } = 2;
    /// <summary>Rounds of every case; each round alternates which engine runs first.</summary>
    public int Rounds { get; init; } = 1;
    public long Seed { get; init; } = 1;
    public TimeSpan RunTimeout { get; init; } = TimeSpan.FromMinutes(15);

    public void Validate()
    {
        if (NewTokens is < 2 or > 4096) throw new ArgumentException($"--new-tokens must be 2–4096 (got {NewTokens})");
        if (Sequences is < 2 or > 256) throw new ArgumentException($"--sequences must be 2–256 (got {Sequences})");
        if (!(Temperature > 0 && double.IsFinite(Temperature))) throw new ArgumentException($"--temperature must be > 0 (got {Temperature})");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentException($"--top-p must be in (0, 1] (got {TopP})");
        if (Threads < 1) throw new ArgumentException($"--threads must be ≥ 1 (got {Threads})");
        if (Rounds < 1) throw new ArgumentException($"--rounds must be ≥ 1 (got {Rounds})");
    }
}

/// <summary>One configuration both engines run (or only ours, for the top-p 1 case). Temperature 0 = greedy.</summary>
public sealed record PeerCase(string Name, string Dtype, int Sequences, double TopP, bool OursOnly, double Temperature, int NewTokens);

/// <summary>Greedy continuations of both engines from the same prompt ids: equal text means the GGUF holds the same model (names,
/// layout, rope, tokenizer ids) — on random weights the top two logits are ~0.1 apart, far above fp32 rounding.</summary>
public sealed record PeerParity(string Dtype, int NewTokens, string Ours, string LlamaCpp, bool Same);

/// <summary>One process's run: time to load (until it can generate), generation time and tokens, peak resident memory.</summary>
/// <param name="LoadSeconds">Ours: <c>ReflectiveModel.Load</c> as <c>generate</c> reports it (the weights are read). llama.cpp: loadModel
/// (mmap: nothing read yet) + createContext.</param>
/// <param name="WarmupSeconds">llama.cpp only: one decode that pages the mapped weights in before the timed generation (0 for ours,
/// whose load already read them).</param>
/// <param name="PeakRssBytes">VmHWM of the process, read from /proc while it ran (the last reading before it exited).</param>
/// <param name="Text">The generated text of a one-sequence run (null with several sequences).</param>
public sealed record PeerRun(string Engine, string Case, int Round, int Order, double LoadSeconds, double WarmupSeconds, double GenerateSeconds,
    int GeneratedTokens, double TokensPerSecond, long PeakRssBytes, double WallSeconds, long FileBytes, string? Text);

/// <summary>Ours / llama.cpp for one case: the median over rounds of each round's ratio (the two runs of a round were back to back).</summary>
public sealed record PeerRatio(string Case, double OursTokensPerSecond, double? LlamaTokensPerSecond, double? Ratio, string? Target, bool? TargetMet);

public sealed record PeerBenchReport(string Machine, string LoadAverageBefore, string LoadAverageAfter, string LlamaCpp, PeerBenchSettings Settings,
    int PromptTokens, long SafetensorsBytes, long GgufBf16Bytes, long GgufF32Bytes, IReadOnlyList<PeerParity> Parity, IReadOnlyList<PeerRun> Runs, IReadOnlyList<PeerRatio> Throughput,
    double TopP1OverTopP095, bool TopP1TargetMet, double LoadRatio, bool LoadTargetMet, double OursPeakRssOverFile, bool RssTargetMet,
    double LlamaPeakRssOverFile, IReadOnlyList<string> Notes)
{
    public IEnumerable<string> ToLines()
    {
        var inv = CultureInfo.InvariantCulture;
        yield return $"metastone bench peer: {Machine}; load average {LoadAverageBefore} before, {LoadAverageAfter} after; {LlamaCpp}";
        yield return string.Create(inv, $"random Qwen2-0.5B shape (tied), safetensors {SafetensorsBytes / 1e6:F0} MB, GGUF bf16 {GgufBf16Bytes / 1e6:F0} MB, f32 {GgufF32Bytes / 1e6:F0} MB; prompt {PromptTokens} tokens, {Settings.NewTokens} new tokens, temperature {Settings.Temperature}, {Settings.Threads} threads, {Settings.Rounds} round(s)");
        foreach (var p in Parity)
            yield return $"greedy parity, {p.Dtype}, {p.NewTokens} tokens: {(p.Same ? "same text" : "DIFFERENT")} (ours {JsonSerializer.Serialize(p.Ours)}, llama.cpp {JsonSerializer.Serialize(p.LlamaCpp)})";
        yield return "case                              ours tok/s  llama.cpp tok/s   ours/llama  target";
        foreach (var r in Throughput)
            yield return string.Create(inv, $"{r.Case,-32}  {r.OursTokensPerSecond,10:F1}  {(r.LlamaTokensPerSecond is double l ? l.ToString("F1", inv) : "—"),15}  {(r.Ratio is double x ? x.ToString("F2", inv) + "×" : "—"),11}  {Verdict(r.Target, r.TargetMet)}");
        yield return string.Create(inv, $"ours top-p 1 / top-p {Settings.TopP} (bf16, {Settings.Sequences} sequences): {TopP1OverTopP095:F2}×  {Verdict("≥ 1", TopP1TargetMet)}");
        yield return string.Create(inv, $"load time ours / llama.cpp (bf16): {LoadRatio:F2}×  {Verdict("≤ 3×", LoadTargetMet)}");
        yield return string.Create(inv, $"peak RSS / file size (bf16, 1 sequence): ours {OursPeakRssOverFile:F2}×  {Verdict("≤ 1.3×", RssTargetMet)}; llama.cpp {LlamaPeakRssOverFile:F2}×");
        foreach (var note in Notes) yield return "note: " + note;
    }

    private static string Verdict(string? target, bool? met) => target is null ? "" : $"{target}: {(met == true ? "met" : "MISSED")}";
}

/// <summary>
/// Issue 13's side-by-side comparison with llama.cpp: the same random Qwen2-0.5B-shape checkpoint (safetensors for us, GGUF for
/// llama.cpp through node-llama-cpp), the same prompt token ids, the same sampling, each run a fresh process (so load time and
/// peak memory are each engine's own), the two engines alternating within each case and round so a noisy shared machine slows
/// both alike. Ratios are the result; absolute figures are reported but judged by nobody.
/// </summary>
public static class PeerBenchmark
{
    public const double TargetBatchedRatio = 8, TargetSingleRatio = 1, TargetLoadRatio = 3, TargetRssOverFile = 1.3;

    public static IReadOnlyList<PeerCase> Cases(PeerBenchSettings s) =>
    [
        new($"bf16, {s.Sequences} sequences", "bf16", s.Sequences, s.TopP, false, s.Temperature, s.NewTokens),
        new("bf16, 1 sequence", "bf16", 1, s.TopP, false, s.Temperature, s.NewTokens),
        new($"fp32, {s.Sequences} sequences", "fp32", s.Sequences, s.TopP, false, s.Temperature, s.NewTokens),
        new("fp32, 1 sequence", "fp32", 1, s.TopP, false, s.Temperature, s.NewTokens),
        new($"bf16, {s.Sequences} sequences, top-p 1", "bf16", s.Sequences, 1.0, true, s.Temperature, s.NewTokens),
    ];

    /// <summary>Tokens of the greedy parity runs.</summary>
    public const int ParityTokens = 8;

    public static async Task<PeerBenchReport> RunAsync(PeerBenchSettings settings, Action<string> log, CancellationToken cancellationToken)
    {
        settings.Validate();
        if (!File.Exists(Path.Combine(settings.NodeLlamaCppDirectory, "node_modules", "node-llama-cpp", "package.json")))
            throw new InvalidOperationException($"node-llama-cpp is not installed in {settings.NodeLlamaCppDirectory}: run tests/tools/peer/fetch-node-llama-cpp.sh");
        if (!File.Exists(settings.NodeScript)) throw new InvalidOperationException($"the llama.cpp runner is missing: {settings.NodeScript}");
        string loadBefore = BenchMachine.LoadAverage();

        var files = PeerCheckpoint.Write(settings.CheckpointDirectory, PeerCheckpoint.Qwen2HalfB([], null), settings.TokenizerDirectory, settings.Seed, log);
        // Our prompt ids exactly as `generate` makes them (its chat template, its tokenizer); llama.cpp gets these ids, not text.
        var tokenizer = QwenTokenizer.FromDirectory(files.ModelDirectory);
        int[] promptIds = tokenizer.Encode(ChatTemplate.Detect(tokenizer, files.ModelDirectory).Render(settings.Prompt));

        var runs = new List<PeerRun>();
        var cases = Cases(settings);
        string llamaDescription = "llama.cpp via node-llama-cpp";

        var parity = new List<PeerParity>();
        foreach (var dtype in new[] { "fp32", "bf16" })
        {
            var greedy = new PeerCase($"greedy {dtype}", dtype, 1, 1.0, false, 0, ParityTokens);
            log($"greedy parity, {dtype}: ours, then llama.cpp …");
            var ours = await RunOursAsync(settings, files, greedy, -1, 0, cancellationToken);
            var (llama, _) = await RunLlamaAsync(settings, files, greedy, promptIds, -1, 1, cancellationToken);
            parity.Add(new PeerParity(dtype, ParityTokens, ours.Text!, llama.Text!, ours.Text == llama.Text));
            log($"  {(ours.Text == llama.Text ? "same text" : "DIFFERENT")}: ours {JsonSerializer.Serialize(ours.Text)}, llama.cpp {JsonSerializer.Serialize(llama.Text)}");
        }
        for (int round = 0; round < settings.Rounds; round++)
        {
            for (int c = 0; c < cases.Count; c++)
            {
                var peerCase = cases[c];
                bool llamaFirst = (round + c) % 2 == 0;
                var order = peerCase.OursOnly ? ["ours"] : llamaFirst ? new[] { "llama.cpp", "ours" } : ["ours", "llama.cpp"];
                for (int o = 0; o < order.Length; o++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    log($"round {round + 1}/{settings.Rounds}: {peerCase.Name}: {order[o]} …");
                    PeerRun run;
                    if (order[o] == "ours") run = await RunOursAsync(settings, files, peerCase, round, o, cancellationToken);
                    else
                    {
                        (run, string description) = await RunLlamaAsync(settings, files, peerCase, promptIds, round, o, cancellationToken);
                        llamaDescription = description;
                    }
                    log(string.Create(CultureInfo.InvariantCulture, $"  {run.TokensPerSecond:F1} tok/s ({run.GeneratedTokens} tokens in {run.GenerateSeconds:F1} s), load {run.LoadSeconds:F1} s{(run.WarmupSeconds > 0 ? $" + warm-up {run.WarmupSeconds:F1} s" : "")}, peak RSS {run.PeakRssBytes / 1e6:F0} MB"));
                    runs.Add(run);
                }
            }
        }
        return Summarize(settings, files, promptIds.Length, parity, runs, cases, loadBefore, llamaDescription);
    }

    private static PeerBenchReport Summarize(PeerBenchSettings settings, PeerCheckpointFiles files, int promptTokens, List<PeerParity> parity, List<PeerRun> runs,
        IReadOnlyList<PeerCase> cases, string loadBefore, string llamaDescription)
    {
        var notes = new List<string>();
        var throughput = new List<PeerRatio>();
        foreach (var peerCase in cases)
        {
            var ours = runs.Where(r => r.Case == peerCase.Name && r.Engine == "ours").OrderBy(r => r.Round).ToList();
            var llama = runs.Where(r => r.Case == peerCase.Name && r.Engine == "llama.cpp").OrderBy(r => r.Round).ToList();
            double oursRate = Median(ours.Select(r => r.TokensPerSecond));
            if (peerCase.OursOnly)
            {
                throughput.Add(new PeerRatio(peerCase.Name, oursRate, null, null, null, null));
                continue;
            }
            double ratio = Median(ours.Zip(llama, (a, b) => a.TokensPerSecond / b.TokensPerSecond));
            double target = peerCase.Sequences > 1 ? TargetBatchedRatio : TargetSingleRatio;
            // The issue sets no target for fp32 at 32 sequences; report its ratio only.
            bool hasTarget = peerCase.Sequences == 1 || peerCase.Dtype == "bf16";
            throughput.Add(new PeerRatio(peerCase.Name, oursRate, Median(llama.Select(r => r.TokensPerSecond)), ratio,
                hasTarget ? string.Create(CultureInfo.InvariantCulture, $"≥ {target:0.#}×") : null, hasTarget ? ratio >= target : null));
        }

        double RoundRatio(string caseA, string caseB, Func<PeerRun, double> value, string engineA = "ours", string engineB = "ours") =>
            Median(Enumerable.Range(0, settings.Rounds).Select(round =>
                value(runs.Single(r => r.Case == caseA && r.Engine == engineA && r.Round == round))
                / value(runs.Single(r => r.Case == caseB && r.Engine == engineB && r.Round == round))));

        var (batchedBf16, singleBf16, topP1) = (cases[0].Name, cases[1].Name, cases[4].Name);
        double topP1Ratio = RoundRatio(topP1, batchedBf16, r => r.TokensPerSecond);
        // Load and memory from the bf16 single-sequence runs: the KV cache and batch buffers are smallest there, so the
        // figures describe the weights.
        double loadRatio = RoundRatio(singleBf16, singleBf16, r => r.LoadSeconds, "ours", "llama.cpp");
        double oursRss = Median(runs.Where(r => r.Case == singleBf16 && r.Engine == "ours").Select(r => (double)r.PeakRssBytes / r.FileBytes));
        double llamaRss = Median(runs.Where(r => r.Case == singleBf16 && r.Engine == "llama.cpp").Select(r => (double)r.PeakRssBytes / r.FileBytes));
        notes.Add("tokens/s = generated tokens / generation wall time (prompt prefill included; each of llama.cpp's sequences prefills the prompt, ours prefill it once and share it)");
        notes.Add("fp32: ours loads the bf16 safetensors into an fp32 model (--dtype fp32), llama.cpp the F32 GGUF of the same values");
        notes.Add("load: ours = ReflectiveModel.Load as `generate` reports it (weights read); llama.cpp = loadModel (mmap) + createContext, then an untimed warm-up decode pages the weights in (warmupSeconds in --json), so neither engine's tok/s pays for reading the file (ours still pays its first, cold decode step); runtime start-up is in neither");
        if (Environment.ProcessorCount <= 2 || !double.TryParse(loadBefore.Split(' ')[0], CultureInfo.InvariantCulture, out double load) || load > Environment.ProcessorCount)
            notes.Add($"machine: {Environment.ProcessorCount} cores, load average {loadBefore} at the start: other work shares the cores, so absolute figures swing run to run; the ratios are from back-to-back runs");
        return new PeerBenchReport(BenchMachine.Description(), loadBefore, BenchMachine.LoadAverage(), llamaDescription, settings, promptTokens,
            files.SafetensorsBytes, files.GgufBf16Bytes, files.GgufF32Bytes, parity, runs, throughput,
            topP1Ratio, topP1Ratio >= 1, loadRatio, loadRatio <= TargetLoadRatio, oursRss, oursRss <= TargetRssOverFile, llamaRss, notes);
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        if (sorted.Length == 0) return double.NaN;
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private static async Task<PeerRun> RunOursAsync(PeerBenchSettings s, PeerCheckpointFiles files, PeerCase c, int round, int order, CancellationToken ct)
    {
        var info = new ProcessStartInfo(s.CliExecutable);
        foreach (var a in s.CliPrefixArguments) info.ArgumentList.Add(a);
        foreach (var a in new[]
        {
            "generate", s.Prompt, "--model", files.ModelDirectory, "--n", c.Sequences.ToString(CultureInfo.InvariantCulture),
            "--seed", s.Seed.ToString(CultureInfo.InvariantCulture), "--temperature", c.Temperature.ToString("R", CultureInfo.InvariantCulture),
            "--top-p", c.TopP.ToString("R", CultureInfo.InvariantCulture), "--top-k", "0", "--repetition-penalty", "1",
            "--max-new-tokens", c.NewTokens.ToString(CultureInfo.InvariantCulture), "--dtype", c.Dtype, "--json",
        }) info.ArgumentList.Add(a);
        // torch's intra-op threads: the same count llama.cpp gets.
        info.Environment["OMP_NUM_THREADS"] = s.Threads.ToString(CultureInfo.InvariantCulture);
        info.Environment["MKL_NUM_THREADS"] = s.Threads.ToString(CultureInfo.InvariantCulture);
        var (stdout, peak, wall) = await RunProcessAsync(info, s.RunTimeout, ct);
        using var json = JsonDocument.Parse(stdout);
        var root = json.RootElement;
        int tokens = root.GetProperty("generatedTokens").GetInt32();
        double seconds = root.GetProperty("generateSeconds").GetDouble();
        // With one candidate the winner is that candidate: its full text.
        string? text = c.Sequences == 1 ? root.GetProperty("winner").GetProperty("text").GetString() : null;
        return new PeerRun("ours", c.Name, round, order, root.GetProperty("loadSeconds").GetDouble(), 0, seconds, tokens, tokens / seconds, peak, wall,
            files.SafetensorsBytes, text);
    }

    private static async Task<(PeerRun Run, string Description)> RunLlamaAsync(PeerBenchSettings s, PeerCheckpointFiles files, PeerCase c, int[] promptIds,
        int round, int order, CancellationToken ct)
    {
        string gguf = c.Dtype == "bf16" ? files.GgufBf16 : files.GgufF32;
        string request = Path.Combine(s.CheckpointDirectory, $"llama-request-{Environment.ProcessId}.json");
        File.WriteAllText(request, JsonSerializer.Serialize(new
        {
            nodeLlamaCppDirectory = s.NodeLlamaCppDirectory, model = gguf, promptTokens = promptIds, sequences = c.Sequences, newTokens = c.NewTokens,
            temperature = c.Temperature, topP = c.TopP, topK = 0, seed = s.Seed, threads = s.Threads,
        }));
        try
        {
            var info = new ProcessStartInfo("node");
            info.ArgumentList.Add(s.NodeScript);
            info.ArgumentList.Add(request);
            var (stdout, peak, wall) = await RunProcessAsync(info, s.RunTimeout, ct);
            string last = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Last();
            using var json = JsonDocument.Parse(last);
            var root = json.RootElement;
            int tokens = root.GetProperty("generatedTokens").GetInt32();
            double seconds = root.GetProperty("generateSeconds").GetDouble();
            string description = $"llama.cpp {root.GetProperty("llamaCppRelease")} ({root.GetProperty("buildType").GetString()} binary) via node-llama-cpp, {root.GetProperty("threads")} threads";
            string? text = c.Sequences == 1 ? root.GetProperty("firstSequenceText").GetString() : null;
            return (new PeerRun("llama.cpp", c.Name, round, order, root.GetProperty("loadSeconds").GetDouble(), root.GetProperty("warmupSeconds").GetDouble(),
                seconds, tokens, tokens / seconds, peak, wall, new FileInfo(gguf).Length, text), description);
        }
        finally { File.Delete(request); }
    }

    /// <summary>Runs a process to the end; returns its stdout, its peak resident set (VmHWM) and its wall time. Fails with its stderr.</summary>
    private static async Task<(string Stdout, long PeakRssBytes, double WallSeconds)> RunProcessAsync(ProcessStartInfo info, TimeSpan timeout, CancellationToken ct)
    {
        info.RedirectStandardOutput = true;
        info.RedirectStandardError = true;
        var clock = Stopwatch.StartNew();
        using var process = Process.Start(info) ?? throw new InvalidOperationException($"{info.FileName} did not start");
        var stdout = process.StandardOutput.ReadToEndAsync(ct);
        var stderr = process.StandardError.ReadToEndAsync(ct);
        long peak = 0;
        string status = $"/proc/{process.Id}/status";
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ct);
        deadline.CancelAfter(timeout);
        try
        {
            while (!process.HasExited)
            {
                peak = Math.Max(peak, ReadHighWaterMark(status)); // monotonic: the last reading before the exit is the peak
                await Task.Delay(50, deadline.Token);
            }
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            if (ct.IsCancellationRequested) throw;
            throw new InvalidOperationException($"{info.FileName} {string.Join(' ', info.ArgumentList.Take(3))} … did not finish within {timeout.TotalMinutes:F0} min");
        }
        await process.WaitForExitAsync(CancellationToken.None);
        string output = await stdout, errors = await stderr;
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"{info.FileName} {string.Join(' ', info.ArgumentList.Take(3))} … exited with {process.ExitCode}:\n{errors.Trim()}");
        if (peak == 0) throw new InvalidOperationException($"no VmHWM reading of {info.FileName}: /proc/PID/status unreadable");
        return (output, peak, clock.Elapsed.TotalSeconds);
    }

    /// <summary>VmHWM (peak resident set) in bytes from /proc/PID/status; 0 once the process is gone.</summary>
    private static long ReadHighWaterMark(string statusPath)
    {
        try
        {
            foreach (var line in File.ReadLines(statusPath))
            {
                if (!line.StartsWith("VmHWM:", StringComparison.Ordinal)) continue;
                var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                return long.Parse(parts[1], CultureInfo.InvariantCulture) * 1024; // kB
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return 0;
    }
}
