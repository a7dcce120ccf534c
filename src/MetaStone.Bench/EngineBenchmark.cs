using System.Diagnostics;
using MetaStone.Model;
using MetaStone.Model.Generation;
using MetaStone.Reasoning;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace MetaStone.Bench;

/// <summary>A model shape the engine benchmark builds with random weights.</summary>
/// <param name="Name">Name used by <c>--shapes</c>.</param>
/// <param name="DtypeNote">Why this dtype (bf16 only pays off with AVX512-BF16/AMX).</param>
/// <param name="DefaultNewTokens">Tokens generated per candidate when <c>--new-tokens</c> is not given.</param>
/// <param name="DefaultSequentialCandidates">Candidates of the one-after-another baseline (fewer than n for slow shapes; rates are compared, not totals).</param>
/// <param name="BatchedSpeedupTarget">Target of batched / sequential decode tokens/s, when there is one for this shape.</param>
public sealed record BenchModelShape(string Name, Qwen2Config Config, ScalarType Dtype, string DtypeNote,
    int DefaultNewTokens, int? DefaultSequentialCandidates, double? BatchedSpeedupTarget)
{
    public const string Tiny = "tiny";
    public const string Qwen2HalfB = "qwen2-0.5b";
    public static IReadOnlyList<string> Names { get; } = [Tiny, Qwen2HalfB];

    /// <param name="tinyLayers">Override of the tiny shape's 4 layers (tests use fewer for speed).</param>
    public static BenchModelShape Create(string name, int? tinyLayers = null) => name switch
    {
        Tiny => new BenchModelShape(Tiny, new Qwen2Config
        {
            VocabSize = 2048, HiddenSize = 256, IntermediateSize = 688, NumHiddenLayers = tinyLayers ?? 4,
            NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = 64, RopeTheta = 1_000_000, MaxPositionEmbeddings = 4096,
        }, ScalarType.Float32, "fp32 (fixed for this shape)", DefaultNewTokens: 128, DefaultSequentialCandidates: null, BatchedSpeedupTarget: 8),
        Qwen2HalfB => CpuFeatures.HasFastBf16
            ? new BenchModelShape(Qwen2HalfB, HalfBConfig, ScalarType.BFloat16, "bf16 (CPU has avx512_bf16/amx_bf16)", 16, 8, null)
            : new BenchModelShape(Qwen2HalfB, HalfBConfig, ScalarType.Float32, "fp32 (CPU lacks avx512_bf16/amx_bf16, where bf16 is slower)", 16, 8, null),
        _ => throw new ArgumentException($"unknown shape '{name}' (valid: {string.Join(", ", Names)})", nameof(name)),
    };

    /// <summary>Qwen2.5-0.5B's shape with an untied LM head (the released model ties it; untied is the costlier case).</summary>
    private static Qwen2Config HalfBConfig => new()
    {
        VocabSize = 151936, HiddenSize = 896, IntermediateSize = 4864, NumHiddenLayers = 24,
        NumAttentionHeads = 14, NumKeyValueHeads = 2, HeadDim = 64, RopeTheta = 1_000_000, MaxPositionEmbeddings = 32768,
    };
}

/// <summary>What one shape's benchmark run does.</summary>
public sealed record EngineBenchSettings
{
    public int Candidates { get; init; } = 32;
    public int NewTokens { get; init; } = 128;
    public int SequentialCandidates { get; init; } = 32;
    public int PromptTokens { get; init; } = 64;
    /// <summary>Every 1/StepTokenPeriod-th id is a step token: 5% of the vocabulary, so steps occur at a realistic rate.</summary>
    public int StepTokenPeriod { get; init; } = 20;
    public long Seed { get; init; } = 1234;
    /// <summary>Nucleus mass; temperature 0.6 and repetition penalty 1.05 stay at MetaStone's defaults.</summary>
    public double TopP { get; init; } = 0.95;
}

/// <summary>
/// Measures the generation engine on random-weight models: batched vs one-after-another decoding, shared-prefix
/// prefill, in-flight SPRM scoring vs none and vs re-encoding, and decode FLOP/s against this machine's matmul
/// rate, all in one run so the ratios compare like with like on a noisy shared machine.
/// </summary>
/// <remarks>
/// Random weights never emit a real end-of-sequence token, so EOS is disabled and every candidate generates
/// exactly <see cref="EngineBenchSettings.NewTokens"/> tokens. The prompt ends with a <c>&lt;think&gt;</c> id and there is no
/// <c>&lt;/think&gt;</c>, so every generated step token is inside the thought and gets scored.
/// Decode time is a run's wall time minus the same configuration's time to first token (prefill + one sampling,
/// no decode forward), so decode rates cover the T−1 decode steps (forward + sampling + bookkeeping) only.
/// </remarks>
public sealed class EngineBenchmark(BenchModelShape shape, EngineBenchSettings settings, TextWriter progress)
{
    /// <summary>Timed runs of the scored and unscored batched configurations, interleaved in alternating order; the fastest of each counts
    /// (the difference being measured is a few percent, below this machine's run-to-run noise).</summary>
    public const int ScoringRepeats = 4;
    private const int WarmupTokens = 4;

    public async Task<ShapeReport> RunAsync(CancellationToken cancellationToken)
    {
        var config = shape.Config;
        int n = settings.Candidates, newTokens = settings.NewTokens, sequential = settings.SequentialCandidates;
        int maxLength = settings.PromptTokens + newTokens;
        var total = Stopwatch.StartNew();

        progress.WriteLine($"[{shape.Name}] building random {shape.Name} ({config.NumHiddenLayers} layers, hidden {config.HiddenSize}, vocab {config.VocabSize}, {TorchSettings.DtypeName(shape.Dtype)})");
        manual_seed(settings.Seed);
        using var model = new Qwen2ForCausalLM(config, shape.Dtype, CPU, ropePositions: maxLength);
        model.eval();
        model.InitializeWeights(settings.Seed);
        using var head = new SprmHead(config.HiddenSize, CPU);

        int thinkId = config.VocabSize - 1;
        var stepIds = Enumerable.Range(0, config.VocabSize).Where(id => id % settings.StepTokenPeriod == 1 && id != thinkId).ToHashSet();
        var rules = new StepTokenSet(stepIds, ThinkStartId: thinkId, ThinkEndId: null);
        var random = new Random(unchecked((int)settings.Seed));
        int[] prompt = [.. Enumerable.Range(0, settings.PromptTokens - 1).Select(_ => random.Next(thinkId)), thinkId];
        var sampling = new SamplingOptions { MaxNewTokens = newTokens, TopP = settings.TopP }; // MetaStone defaults: T 0.6, top-p 0.95, rep 1.05
        GenerationRequest Request(int candidates, int tokens, bool score = true) => new()
        {
            PromptIds = prompt,
            Seeds = Enumerable.Range(0, candidates).Select(i => settings.Seed + i).ToArray(),
            Sampling = sampling with { MaxNewTokens = tokens },
            ScoreSteps = score,
        };
        GenerationEngine Engine(int maxBatch, bool sharePrefix) => new(model, head, new EngineOptions
        {
            MaxBatch = maxBatch, MaxSequenceLength = maxLength, StepRules = rules, EosTokenIds = [], SharePrefix = sharePrefix,
            Name = $"bench-{shape.Name}-b{maxBatch}{(sharePrefix ? "" : "-noshare")}",
        });

        // 1 + 3: batched (one request, n seeds, MaxBatch n), with and without in-flight scoring.
        RunMeasurement sharedFirstToken;
        RunMeasurement? scored = null, unscored = null;
        using (var batched = Engine(n, sharePrefix: true))
        {
            progress.WriteLine($"[{shape.Name}] batched: {n} candidates × {newTokens} tokens, scoring on/off ×{ScoringRepeats}");
            await Measure(batched, Request(n, Math.Min(WarmupTokens, newTokens)), cancellationToken).ConfigureAwait(false);
            sharedFirstToken = await Measure(batched, Request(n, 1), cancellationToken).ConfigureAwait(false);
            for (int repeat = 0; repeat < ScoringRepeats; repeat++)
            {
                // The order alternates: with the scored run always first, the second run of every pair was the slower one
                // (a "negative overhead" of 10–50 % in all 20 runs of the engine-split measurement).
                RunMeasurement on, off;
                if (repeat % 2 == 0)
                {
                    on = await Measure(batched, Request(n, newTokens, score: true), cancellationToken).ConfigureAwait(false);
                    off = await Measure(batched, Request(n, newTokens, score: false), cancellationToken).ConfigureAwait(false);
                }
                else
                {
                    off = await Measure(batched, Request(n, newTokens, score: false), cancellationToken).ConfigureAwait(false);
                    on = await Measure(batched, Request(n, newTokens, score: true), cancellationToken).ConfigureAwait(false);
                }
                if (scored is null || on.Seconds < scored.Seconds) scored = on;
                if (unscored is null || off.Seconds < unscored.Seconds) unscored = off;
            }
        }
        if (scored is null || unscored is null) throw new InvalidOperationException("no timed batched run");
        var unscoredTrajectories = unscored.Trajectories;

        // 2: the same first token without prefix sharing: every candidate prefills the prompt itself.
        RunMeasurement separateFirstToken;
        using (var separate = Engine(n, sharePrefix: false))
        {
            progress.WriteLine($"[{shape.Name}] prefill without prefix sharing: {n} × {settings.PromptTokens} tokens");
            await Measure(separate, Request(Math.Min(n, 2), 1), cancellationToken).ConfigureAwait(false);
            separateFirstToken = await Measure(separate, Request(n, 1), cancellationToken).ConfigureAwait(false);
        }

        // 1: the baseline, candidates one after another (MaxBatch 1: each waits for the previous one's slot).
        RunMeasurement sequentialFirstToken, sequentialRun;
        using (var oneAtATime = Engine(1, sharePrefix: true))
        {
            progress.WriteLine($"[{shape.Name}] sequential: {sequential} candidates × {newTokens} tokens at MaxBatch 1");
            await Measure(oneAtATime, Request(1, Math.Min(WarmupTokens, newTokens)), cancellationToken).ConfigureAwait(false);
            sequentialFirstToken = await Measure(oneAtATime, Request(1, 1), cancellationToken).ConfigureAwait(false);
            sequentialRun = await Measure(oneAtATime, Request(sequential, newTokens), cancellationToken).ConfigureAwait(false);
        }

        // 3: the released pipeline's way: generate without scoring, then one full forward per trajectory.
        progress.WriteLine($"[{shape.Name}] re-encoding {unscoredTrajectories.Count} trajectories to score them");
        ReencodeScorer.Score(model, head, rules, prompt, unscoredTrajectories[0].ResponseIds); // warm-up
        int reencodedSteps = 0;
        var reencodeTimer = Stopwatch.StartNew();
        foreach (var trajectory in unscoredTrajectories)
        {
            cancellationToken.ThrowIfCancellationRequested();
            reencodedSteps += ReencodeScorer.Score(model, head, rules, prompt, trajectory.ResponseIds).Count;
        }
        double reencodeSeconds = reencodeTimer.Elapsed.TotalSeconds;

        // 4: the bare model forward of one decode step (no sampling, no bookkeeping) and the matmul rate.
        progress.WriteLine($"[{shape.Name}] forward-only decode steps and matmul rate");
        int midPosition = settings.PromptTokens + newTokens / 2;
        double forwardStepBatched = TimeDecodeForward(model, n, maxLength, midPosition);
        double forwardStepSingle = TimeDecodeForward(model, 1, maxLength, midPosition);
        var (matmulSeconds, matmulFlops) = TimeLinear(n, config.HiddenSize, config.VocabSize, shape.Dtype);

        // ---- derived numbers
        int decodeSteps = newTokens - 1;
        double batchedDecodeSeconds = scored.Seconds - sharedFirstToken.Seconds;
        double sequentialDecodeSeconds = sequentialRun.Seconds - sequential * sequentialFirstToken.Seconds;
        double batchedDecodeRate = (double)n * decodeSteps / batchedDecodeSeconds;
        double sequentialDecodeRate = (double)sequential * decodeSteps / sequentialDecodeSeconds;

        double denseFlopsPerToken = 2.0 * config.DecoderParameterCount;
        // Decode step i (0-based) feeds position prompt+i and attends over prompt+i+1 keys; QKᵀ and AV are
        // 2·heads·headDim FLOPs per key each.
        double attentionFlops = 0;
        for (int i = 0; i < decodeSteps; i++)
            attentionFlops += 4.0 * config.NumHiddenLayers * config.NumAttentionHeads * config.HeadDim * (settings.PromptTokens + i + 1);
        double attentionFlopsPerToken = attentionFlops / decodeSteps;
        double decodeTokens = (double)n * decodeSteps;
        double decodeFlopRate = denseFlopsPerToken * decodeTokens / batchedDecodeSeconds;
        double decodeFlopRateWithAttention = (denseFlopsPerToken + attentionFlopsPerToken) * decodeTokens / batchedDecodeSeconds;
        double matmulFlopRate = matmulFlops / matmulSeconds;

        var report = new ShapeReport
        {
            Shape = shape.Name,
            Layers = config.NumHiddenLayers,
            HiddenSize = config.HiddenSize,
            AttentionHeads = config.NumAttentionHeads,
            KeyValueHeads = config.NumKeyValueHeads,
            IntermediateSize = config.IntermediateSize,
            VocabSize = config.VocabSize,
            TiedLmHead = config.TieWordEmbeddings,
            DecoderParameters = config.DecoderParameterCount,
            Dtype = TorchSettings.DtypeName(shape.Dtype),
            DtypeNote = shape.DtypeNote,
            Candidates = n,
            SequentialCandidates = sequential,
            PromptTokens = settings.PromptTokens,
            NewTokens = newTokens,
            StepTokenFraction = (double)stepIds.Count / config.VocabSize,
            Sampling = $"temperature {sampling.Temperature}, top-p {sampling.TopP}, repetition penalty {sampling.RepetitionPenalty}, no EOS",
            Batching = new BatchingReport
            {
                BatchedSeconds = scored.Seconds,
                BatchedFirstTokenSeconds = sharedFirstToken.Seconds,
                BatchedDecodeTokensPerSecond = batchedDecodeRate,
                BatchedEngineStepMilliseconds = 1000 * batchedDecodeSeconds / decodeSteps,
                SequentialSeconds = sequentialRun.Seconds,
                SequentialFirstTokenSeconds = sequentialFirstToken.Seconds,
                SequentialDecodeTokensPerSecond = sequentialDecodeRate,
                SequentialEngineStepMilliseconds = 1000 * sequentialDecodeSeconds / (sequential * decodeSteps),
                DecodeSpeedup = batchedDecodeRate / sequentialDecodeRate,
                EndToEndSpeedup = (n * (double)newTokens / scored.Seconds) / (sequential * (double)newTokens / sequentialRun.Seconds),
                Target = shape.BatchedSpeedupTarget,
            },
            Prefill = new PrefillReport
            {
                SharedTokensComputed = sharedFirstToken.PrefillTokensComputed,
                SharedTokensReused = sharedFirstToken.PrefillTokensReused,
                SeparateTokensComputed = separateFirstToken.PrefillTokensComputed,
                Ratio = (double)separateFirstToken.PrefillTokensComputed / sharedFirstToken.PrefillTokensComputed,
                SharedFirstTokenSeconds = sharedFirstToken.Seconds,
                SeparateFirstTokenSeconds = separateFirstToken.Seconds,
                SavedSeconds = separateFirstToken.Seconds - sharedFirstToken.Seconds,
            },
            Scoring = new ScoringReport
            {
                ScoredSeconds = scored.Seconds,
                UnscoredSeconds = unscored.Seconds,
                OverheadPercent = 100 * (scored.Seconds - unscored.Seconds) / unscored.Seconds,
                TargetOverheadPercent = 3,
                StepsScored = scored.StepsScored,
                ReencodeSeconds = reencodeSeconds,
                ReencodeStepsScored = reencodedSteps,
                ReencodePipelineSeconds = unscored.Seconds + reencodeSeconds,
                ReencodeOverheadPercent = 100 * reencodeSeconds / unscored.Seconds,
                InFlightSpeedupOverReencode = (unscored.Seconds + reencodeSeconds) / scored.Seconds,
            },
            Compute = new ComputeReport
            {
                DenseFlopsPerToken = denseFlopsPerToken,
                AttentionFlopsPerToken = attentionFlopsPerToken,
                DecodeFlopsPerSecond = decodeFlopRate,
                DecodeFlopsPerSecondWithAttention = decodeFlopRateWithAttention,
                MatmulShape = $"F.linear [{n}×{config.HiddenSize}] · [{config.VocabSize}×{config.HiddenSize}]ᵀ {TorchSettings.DtypeName(shape.Dtype)} (LM head, the largest weight)",
                MatmulMilliseconds = 1000 * matmulSeconds,
                MatmulFlopsPerSecond = matmulFlopRate,
                FractionOfMatmul = decodeFlopRate / matmulFlopRate,
                FractionOfMatmulWithAttention = decodeFlopRateWithAttention / matmulFlopRate,
                ForwardStepMillisecondsBatched = 1000 * forwardStepBatched,
                ForwardStepMillisecondsSingle = 1000 * forwardStepSingle,
                ForwardOnlyFlopsPerSecond = denseFlopsPerToken * n / forwardStepBatched,
            },
            TotalSeconds = total.Elapsed.TotalSeconds,
        };
        progress.WriteLine($"[{shape.Name}] done in {report.TotalSeconds:F0} s");
        return report;
    }

    private static async Task<RunMeasurement> Measure(GenerationEngine engine, GenerationRequest request, CancellationToken cancellationToken)
    {
        var before = engine.Stats;
        var timer = Stopwatch.StartNew();
        var trajectories = await engine.GenerateAsync(request, cancellationToken).ConfigureAwait(false);
        double seconds = timer.Elapsed.TotalSeconds;
        var after = engine.Stats;
        int expected = request.Sampling.MaxNewTokens;
        if (trajectories.Any(t => t.ResponseIds.Length != expected))
            throw new InvalidOperationException($"a candidate stopped before {expected} tokens although EOS is disabled");
        return new RunMeasurement(seconds, trajectories,
            after.GeneratedTokens - before.GeneratedTokens,
            after.PrefillTokensComputed - before.PrefillTokensComputed,
            after.PrefillTokensReused - before.PrefillTokensReused,
            after.StepsScored - before.StepsScored);
    }

    /// <summary>Median seconds of one bare <see cref="Qwen2ForCausalLM.Decode"/> call for <paramref name="batch"/> rows at <paramref name="position"/>.</summary>
    private static double TimeDecodeForward(Qwen2ForCausalLM model, int batch, int maxLength, int position)
    {
        using var cache = new KvCache(model.Config, batch, maxLength, CPU, model.KvDtype);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = randint(model.Config.VocabSize, [batch], dtype: ScalarType.Int64);
        long[] slots = [.. Enumerable.Range(0, batch).Select(i => (long)i)];
        long[] positions = [.. Enumerable.Repeat((long)position, batch)];
        return MedianSeconds(() =>
        {
            using var inner = NewDisposeScope();
            model.Decode(ids, cache, slots, positions);
        }, warmups: 1, minIterations: 5, minSeconds: 0.3);
    }

    /// <summary>Median seconds and FLOPs of <c>F.linear(x[m, in], W[out, in])</c> in <paramref name="dtype"/>.</summary>
    private static (double Seconds, double Flops) TimeLinear(int m, int inFeatures, int outFeatures, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var weight = (randn(outFeatures, inFeatures) * 0.02).to_type(dtype);
        var input = randn(m, inFeatures).to_type(dtype);
        double seconds = MedianSeconds(() =>
        {
            using var inner = NewDisposeScope();
            F.linear(input, weight);
        }, warmups: 2, minIterations: 10, minSeconds: 0.5);
        return (seconds, 2.0 * m * inFeatures * outFeatures);
    }

    private static double MedianSeconds(Action action, int warmups, int minIterations, double minSeconds)
    {
        for (int i = 0; i < warmups; i++) action();
        var samples = new List<double>();
        var total = Stopwatch.StartNew();
        while (samples.Count < minIterations || total.Elapsed.TotalSeconds < minSeconds)
        {
            var timer = Stopwatch.StartNew();
            action();
            samples.Add(timer.Elapsed.TotalSeconds);
        }
        samples.Sort();
        return samples[samples.Count / 2];
    }

    /// <summary>Benchmarks each shape in turn (settings per shape) and wraps the results with the machine's description.</summary>
    public static async Task<EngineBenchReport> RunShapesAsync(IReadOnlyList<BenchModelShape> shapes, Func<BenchModelShape, EngineBenchSettings> settings,
        TextWriter progress, CancellationToken cancellationToken)
    {
        // Other jobs on a shared machine slow every number down (and 2-thread ops stall when one thread is
        // descheduled): the load average before and after tells a reader how much to trust the run.
        string loadBefore = BenchMachine.LoadAverage();
        var reports = new List<ShapeReport>();
        foreach (var shape in shapes)
            reports.Add(await new EngineBenchmark(shape, settings(shape), progress).RunAsync(cancellationToken).ConfigureAwait(false));
        return new EngineBenchReport(BenchMachine.Description(), get_num_threads(), CpuFeatures.HasFastBf16, loadBefore, BenchMachine.LoadAverage(), reports);
    }

    private sealed record RunMeasurement(double Seconds, IReadOnlyList<Trajectory> Trajectories, long GeneratedTokens,
        long PrefillTokensComputed, long PrefillTokensReused, long StepsScored);
}

/// <summary>The <c>--json</c> document of <c>bench engine</c>.</summary>
public sealed record EngineBenchReport(string Machine, int TorchThreads, bool FastBf16, string LoadAverageBefore, string LoadAverageAfter,
    IReadOnlyList<ShapeReport> Shapes)
{
    /// <summary>The text table of <c>bench engine</c>: one column per shape.</summary>
    // InvariantGlobalization is on (Directory.Build.props), so number formatting is culture-invariant.
    public IEnumerable<string> ToLines()
    {
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
        yield return $"metastone bench engine: {Machine}, torch threads {TorchThreads}, fast bf16 {(FastBf16 ? "yes" : "no")}, load average {LoadAverageBefore} before, {LoadAverageAfter} after";
        foreach (var s in Shapes)
            yield return $"  {s.Shape}: {s.Dtype}, {s.DtypeNote}; {s.Sampling}; {100 * s.StepTokenFraction:F1}% of ids are step tokens, <think> ends the prompt";
        int labelWidth = rows.Max(r => r.Label.Length);
        var columns = Shapes.Select(s => rows.Select(r => r.Value(s)).ToList()).ToList();
        var widths = Shapes.Select((s, i) => Math.Max(s.Shape.Length, columns[i].Max(v => v.Length))).ToList();
        yield return "";
        yield return "".PadRight(labelWidth) + string.Concat(Shapes.Select((s, i) => " | " + s.Shape.PadRight(widths[i])));
        yield return new string('-', labelWidth) + string.Concat(widths.Select(w => "-+-" + new string('-', w)));
        for (int r = 0; r < rows.Count; r++)
            yield return rows[r].Label.PadRight(labelWidth) + string.Concat(Shapes.Select((s, i) => " | " + columns[i][r].PadRight(widths[i])));
    }
}

public sealed record ShapeReport
{
    public required string Shape { get; init; }
    public required int Layers { get; init; }
    public required int HiddenSize { get; init; }
    public required int AttentionHeads { get; init; }
    public required int KeyValueHeads { get; init; }
    public required int IntermediateSize { get; init; }
    public required int VocabSize { get; init; }
    public required bool TiedLmHead { get; init; }
    public required long DecoderParameters { get; init; }
    public required string Dtype { get; init; }
    public required string DtypeNote { get; init; }
    public required int Candidates { get; init; }
    public required int SequentialCandidates { get; init; }
    public required int PromptTokens { get; init; }
    public required int NewTokens { get; init; }
    public required double StepTokenFraction { get; init; }
    public required string Sampling { get; init; }
    public required BatchingReport Batching { get; init; }
    public required PrefillReport Prefill { get; init; }
    public required ScoringReport Scoring { get; init; }
    public required ComputeReport Compute { get; init; }
    public required double TotalSeconds { get; init; }
}

/// <summary>Metric 1: n candidates in one batch vs one after another; decode rates exclude each run's time to first token.</summary>
public sealed record BatchingReport
{
    public required double BatchedSeconds { get; init; }
    public required double BatchedFirstTokenSeconds { get; init; }
    public required double BatchedDecodeTokensPerSecond { get; init; }
    public required double BatchedEngineStepMilliseconds { get; init; }
    public required double SequentialSeconds { get; init; }
    /// <summary>Time to first token of one candidate (its prefill); the sequential run pays it once per candidate.</summary>
    public required double SequentialFirstTokenSeconds { get; init; }
    public required double SequentialDecodeTokensPerSecond { get; init; }
    public required double SequentialEngineStepMilliseconds { get; init; }
    public required double DecodeSpeedup { get; init; }
    public required double EndToEndSpeedup { get; init; }
    public required double? Target { get; init; }
}

/// <summary>Metric 2: prompt tokens run through the model with and without prefix sharing, from <see cref="EngineStats"/>.</summary>
public sealed record PrefillReport
{
    public required long SharedTokensComputed { get; init; }
    public required long SharedTokensReused { get; init; }
    public required long SeparateTokensComputed { get; init; }
    /// <summary>Separate / shared tokens computed: exactly n.</summary>
    public required double Ratio { get; init; }
    public required double SharedFirstTokenSeconds { get; init; }
    public required double SeparateFirstTokenSeconds { get; init; }
    public required double SavedSeconds { get; init; }
}

/// <summary>Metric 3: the batched run with in-flight scoring vs without, and vs generate-then-re-encode.</summary>
public sealed record ScoringReport
{
    public required double ScoredSeconds { get; init; }
    public required double UnscoredSeconds { get; init; }
    public required double OverheadPercent { get; init; }
    public required double TargetOverheadPercent { get; init; }
    public required long StepsScored { get; init; }
    /// <summary>One <see cref="ReencodeScorer"/> forward per trajectory (B = 1), after the unscored run.</summary>
    public required double ReencodeSeconds { get; init; }
    public required long ReencodeStepsScored { get; init; }
    public required double ReencodePipelineSeconds { get; init; }
    public required double ReencodeOverheadPercent { get; init; }
    public required double InFlightSpeedupOverReencode { get; init; }
}

/// <summary>Metric 4: decode FLOP/s (2 × decoder parameters per token, optionally + attention) vs this machine's matmul rate.</summary>
public sealed record ComputeReport
{
    public required double DenseFlopsPerToken { get; init; }
    public required double AttentionFlopsPerToken { get; init; }
    public required double DecodeFlopsPerSecond { get; init; }
    public required double DecodeFlopsPerSecondWithAttention { get; init; }
    public required string MatmulShape { get; init; }
    public required double MatmulMilliseconds { get; init; }
    public required double MatmulFlopsPerSecond { get; init; }
    public required double FractionOfMatmul { get; init; }
    public required double FractionOfMatmulWithAttention { get; init; }
    /// <summary>One bare model decode forward at B = n (no sampling, no engine bookkeeping), median.</summary>
    public required double ForwardStepMillisecondsBatched { get; init; }
    public required double ForwardStepMillisecondsSingle { get; init; }
    public required double ForwardOnlyFlopsPerSecond { get; init; }
}
