using System.Diagnostics;
using System.Globalization;
using MetaStone.Model;
using MetaStone.Model.Checkpoints;
using MetaStone.Model.Generation;
using MetaStone.Reasoning;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

// Usage:
//   DecodeBench write DIR [tiny]               writes a random Qwen2-0.5B-shape checkpoint (tied, bf16) once, or the
//                                              engine bench's tiny shape (fp32, untied)
//   DecodeBench run DIR DTYPE K[,K…] TOKENS R  loads it (timed, peak RSS), then R rounds of each K: decode tok/s
//   DecodeBench forward DIR DTYPE K[,K…] R [T]  R rounds of the bare decode forward per K (median ms), T threads
//   DecodeBench profile DIR DTYPE K[,K…] [T]   per-op-class profile of one decode step (needs WITH_PROFILER), T threads
// Output: one JSON-ish line per measurement, so runs of two builds can be interleaved by a script and compared as ratios.

var inv = CultureInfo.InvariantCulture;
string mode = args.Length > 0 ? args[0] : throw new ArgumentException("mode: write | run | profile");
string dir = args[1];

if (mode == "write")
{
    manual_seed(13);
    bool tiny = args.Length > 2 && args[2] == "tiny";
    var config = tiny ? TinyShape() : HalfBShape();
    using var model = new Qwen2ForCausalLM(config, tiny ? ScalarType.Float32 : ScalarType.BFloat16, CPU, ropePositions: 256, initializeWeights: false);
    model.InitializeWeights(13);
    Directory.CreateDirectory(dir);
    config.Save(Path.Combine(dir, "config.json"));
    SafeTensors.Save(Path.Combine(dir, "model.safetensors"),
        model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach()), new Dictionary<string, string> { ["format"] = "pt" });
    Console.WriteLine($"wrote {dir} ({new FileInfo(Path.Combine(dir, "model.safetensors")).Length / 1e6:F0} MB)");
    return;
}

if (mode == "linear")
{
    // Fused vs separate projections at the 0.5B shape's matmul sizes (random weights), alternating, median ms of 31.
    var linearDtype = TorchSettings.ParseDtype(args[2]);
    if (args.Length > 4) set_num_threads(int.Parse(args[4], inv));
    using var linearScope = NewDisposeScope();
    using var linearNoGrad = no_grad();
    foreach (int m in args[3].Split(',').Select(int.Parse))
    {
        var x = randn(m, 1, 896).to_type(linearDtype);
        Tensor W(long rows) => (randn(rows, 896) * 0.02).to_type(linearDtype);
        Tensor[] layersQ = [.. Enumerable.Range(0, 24).Select(_ => W(896))], layersK = [.. Enumerable.Range(0, 24).Select(_ => W(128))], layersV = [.. Enumerable.Range(0, 24).Select(_ => W(128))];
        Tensor[] layersG = [.. Enumerable.Range(0, 24).Select(_ => W(4864))], layersU = [.. Enumerable.Range(0, 24).Select(_ => W(4864))];
        Tensor[] fusedQkv = [.. Enumerable.Range(0, 24).Select(i => cat([layersQ[i], layersK[i], layersV[i]], 0))];
        Tensor[] fusedGu = [.. Enumerable.Range(0, 24).Select(i => cat([layersG[i], layersU[i]], 0))];
        var bq = zeros(896).to_type(linearDtype); var bk = zeros(128).to_type(linearDtype); var bqkv = zeros(1152).to_type(linearDtype);
        List<double> qkvSeparate = [], qkvFused = [], guSeparate = [], guFused = [];
        double Time(Action a) { var t = Stopwatch.StartNew(); a(); return t.Elapsed.TotalMilliseconds; }
        for (int rep = 0; rep < 31; rep++)
        {
            using (NewDisposeScope())
            {
                qkvSeparate.Add(Time(() => { for (int i = 0; i < 24; i++) { F.linear(x, layersQ[i], bq); F.linear(x, layersK[i], bk); F.linear(x, layersV[i], bk); } }));
                qkvFused.Add(Time(() => { for (int i = 0; i < 24; i++) F.linear(x, fusedQkv[i], bqkv); }));
                guSeparate.Add(Time(() => { for (int i = 0; i < 24; i++) { F.linear(x, layersG[i]); F.linear(x, layersU[i]); } }));
                guFused.Add(Time(() => { for (int i = 0; i < 24; i++) F.linear(x, fusedGu[i]); }));
            }
        }
        double Median(List<double> v) { v.Sort(); return v[v.Count / 2]; }
        Console.WriteLine(string.Create(inv, $"{{\"what\":\"linear\",\"dtype\":\"{args[2]}\",\"threads\":{get_num_threads()},\"m\":{m},\"qkvSeparateMs\":{Median(qkvSeparate):F2},\"qkvFusedMs\":{Median(qkvFused):F2},\"gateUpSeparateMs\":{Median(guSeparate):F2},\"gateUpFusedMs\":{Median(guFused):F2}}}"));
    }
    return;
}

var dtype = TorchSettings.ParseDtype(args[2]);
int[] ks = [.. args[3].Split(',').Select(int.Parse)];
const int PromptTokens = 64;

var loadTimer = Stopwatch.StartNew();
var cfg = Qwen2Config.Load(Path.Combine(dir, "config.json"));
using var loaded = new Qwen2ForCausalLM(cfg, dtype, CPU, ropePositions: 512, initializeWeights: false);
loaded.LoadWeights(CheckpointDirectory.ReadTensorLocations(dir));
loaded.eval();
double loadSeconds = loadTimer.Elapsed.TotalSeconds;
long fileBytes = Directory.GetFiles(dir, "*.safetensors").Sum(f => new FileInfo(f).Length);
Console.WriteLine(string.Create(inv, $"{{\"what\":\"load\",\"dtype\":\"{args[2]}\",\"threads\":{get_num_threads()},\"seconds\":{loadSeconds:F2},\"peakRssMB\":{PeakRssMb():F0},\"fileMB\":{fileBytes / 1e6:F0}}}"));

var random = new Random(7);
int[] prompt = [.. Enumerable.Range(0, PromptTokens).Select(_ => random.Next(cfg.VocabSize - 1))];

if (mode == "profile")
{
#if WITH_PROFILER
    // Optional intra-op thread count: on an oversubscribed machine one thread keeps OpenMP barriers (a parallel region
    // waiting for a descheduled thread) out of the per-class times, so their proportions stay comparable.
    if (args.Length > 4) set_num_threads(int.Parse(args[4], inv));
    foreach (int k in ks)
        Console.WriteLine(MetaStone.Model.Diagnostics.DecodeProfiler.Run(loaded, k, PromptTokens + 16, prompt).ToJson());
    return;
#else
    throw new InvalidOperationException("built without the profiler (WithProfiler=false)");
#endif
}

if (mode == "forward")
{
    // The bare decode forward only (no engine, no sampling), median ms per k, in R rounds; optional thread count.
    int forwardRounds = int.Parse(args[4], inv);
    if (args.Length > 5) set_num_threads(int.Parse(args[5], inv));
    for (int round = 0; round < forwardRounds; round++)
        foreach (int k in ks)
        {
            var (ms, tensors) = TimeDecodeForward(loaded, k, PromptTokens + 33, PromptTokens + 16);
            Console.WriteLine(string.Create(inv, $"{{\"what\":\"forward\",\"dtype\":\"{args[2]}\",\"threads\":{get_num_threads()},\"k\":{k},\"round\":{round},\"forwardMs\":{ms:F2},\"tensorsPerStep\":{tensors}}}"));
        }
    return;
}

int newTokens = int.Parse(args[4], inv);
int rounds = int.Parse(args[5], inv);
foreach (int round in Enumerable.Range(0, rounds))
{
    foreach (int k in ks)
    {
        using var engine = new GenerationEngine(loaded, head: null, new EngineOptions
        {
            MaxBatch = k, MaxSequenceLength = PromptTokens + newTokens + 1, EosTokenIds = [], Name = $"decode-bench-k{k}",
        });
        // The issue's setting: temperature 0.8 (top-p 0.95, repetition penalty 1.05 stay at their defaults).
        var sampling = new SamplingOptions { Temperature = 0.8, MaxNewTokens = newTokens };
        GenerationRequest Request(int tokens) => new()
        {
            PromptIds = prompt, Seeds = [.. Enumerable.Range(0, k).Select(i => 100L + i)], Sampling = sampling with { MaxNewTokens = tokens }, ScoreSteps = false,
        };
        var (forwardMs, tensorsPerStep) = TimeDecodeForward(loaded, k, PromptTokens + newTokens + 1, PromptTokens + newTokens / 2);
        await engine.GenerateAsync(Request(4), CancellationToken.None); // warm-up
        var firstTimer = Stopwatch.StartNew();
        await engine.GenerateAsync(Request(1), CancellationToken.None);
        double firstToken = firstTimer.Elapsed.TotalSeconds;
        var runTimer = Stopwatch.StartNew();
        var result = await engine.GenerateAsync(Request(newTokens), CancellationToken.None);
        double run = runTimer.Elapsed.TotalSeconds;
        if (result.Any(t => t.ResponseIds.Length != newTokens)) throw new InvalidOperationException("a candidate stopped early");
        // Decode rate: the run minus its time to first token (prefill + one sampling), as `bench engine` computes it.
        double decodeRate = (double)k * (newTokens - 1) / (run - firstToken);
        Console.WriteLine(string.Create(inv, $"{{\"what\":\"decode\",\"dtype\":\"{args[2]}\",\"k\":{k},\"round\":{round},\"tokPerSec\":{decodeRate:F2},\"endToEndTokPerSec\":{k * newTokens / run:F2},\"firstTokenSeconds\":{firstToken:F3},\"forwardMs\":{forwardMs:F2},\"tensorsPerStep\":{tensorsPerStep}}}"));
    }
}

// The bare model forward of one decode step at batch k (no sampling, no engine): median ms, and the tensor handles it creates.
static (double Ms, long Tensors) TimeDecodeForward(Qwen2ForCausalLM model, int batch, int maxLength, int position)
{
    using var cache = new KvCache(model.Config, batch, maxLength, CPU, model.KvDtype);
    using var scope = NewDisposeScope();
    using var noGrad = no_grad();
    var ids = randint(model.Config.VocabSize, [batch], dtype: ScalarType.Int64);
    long[] slots = [.. Enumerable.Range(0, batch).Select(i => (long)i)];
    long[] positions = [.. Enumerable.Repeat((long)position, batch)];
    // Every tensor handle the step creates, nested dispose scopes included.
    var stats = TorchSharp.DisposeScopeManager.Statistics;
    long before = stats.CreatedInScopeCount + stats.CreatedOutsideScopeCount;
    using (NewDisposeScope()) model.Decode(ids, cache, slots, positions);
    long tensors = stats.CreatedInScopeCount + stats.CreatedOutsideScopeCount - before;
    var times = new double[7];
    for (int i = 0; i < times.Length; i++)
    {
        using var inner = NewDisposeScope();
        var timer = Stopwatch.StartNew();
        model.Decode(ids, cache, slots, positions);
        times[i] = timer.Elapsed.TotalMilliseconds;
    }
    Array.Sort(times);
    return (times[times.Length / 2], tensors);
}

static Qwen2Config HalfBShape() => new()
{
    VocabSize = 151936, HiddenSize = 896, IntermediateSize = 4864, NumHiddenLayers = 24, NumAttentionHeads = 14,
    NumKeyValueHeads = 2, HeadDim = 64, RopeTheta = 1_000_000, MaxPositionEmbeddings = 32768, TieWordEmbeddings = true,
};

// `metastone bench engine --shapes tiny`'s shape (MetaStone.Bench.BenchModelShape), for profiling its decode step.
static Qwen2Config TinyShape() => new()
{
    VocabSize = 2048, HiddenSize = 256, IntermediateSize = 688, NumHiddenLayers = 4, NumAttentionHeads = 4,
    NumKeyValueHeads = 2, HeadDim = 64, RopeTheta = 1_000_000, MaxPositionEmbeddings = 4096,
};

static double PeakRssMb()
{
    var line = File.ReadLines("/proc/self/status").First(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
    return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024.0;
}
