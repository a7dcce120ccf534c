using MetaStone.Model.Checkpoints;
using MetaStone.Model.Generation;
using MetaStone.Model.Tokenization;
using MetaStone.Reasoning;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model;

/// <summary>How to load a model directory.</summary>
public sealed record ModelLoadOptions
{
    /// <summary>cpu, cuda, cuda:N.</summary>
    public string Device { get; init; } = "cpu";
    /// <summary>fp32 / bf16 / fp16; null = the config's dtype, except bf16/fp16 on a CPU without fast bf16 → fp32.</summary>
    public string? Dtype { get; init; }
    /// <summary>deepseek-r1 / chatml / plain; null = detected from tokenizer_config.json.</summary>
    public string? ChatTemplate { get; init; }
    public int MaxBatch { get; init; } = 32;
    public int MaxSequenceLength { get; init; } = 2048;
    public bool SharePrefix { get; init; } = true;
    /// <summary><see cref="EngineOptions.MinDecodeStep"/>: a floor on one decode step, for tests and demos; zero = none.</summary>
    public TimeSpan MinDecodeStep { get; init; }

    /// <summary>fp32 / bf16 / fp16 for the keys and values of the KV cache; null = <see cref="Qwen2ForCausalLM.KvDtype"/>'s
    /// default (fp32 on the CPU, the weights' dtype elsewhere). bf16 halves the cache at a cost in accuracy.</summary>
    public string? KvCacheDtype { get; init; }

    /// <summary>Run one prefill and one decode step before returning (<see cref="Qwen2ForCausalLM.WarmUp"/>), so the
    /// first request does not pay for compiling the forward pass.</summary>
    public bool WarmUp { get; init; } = true;

    /// <summary>The directory's tokenizer when the caller has already read it (e.g. to size the cache to the prompt);
    /// null = read tokenizer.json here. Reading Qwen's 151k-token tokenizer takes ~1 s.</summary>
    public QwenTokenizer? Tokenizer { get; init; }
}

/// <summary>A model directory that cannot be loaded; the message is one line naming the directory and the problem.
/// An <see cref="ArgumentException"/>, so the CLI and the silo report it as a bad setting (exit code 2).</summary>
public sealed class ModelLoadException(string message, Exception inner) : ArgumentException(message, inner);

/// <summary>One candidate of a Best-of-N answer, decoded.</summary>
public sealed record CandidateAnswer(Trajectory Trajectory, string Text, string? Answer, double Score);

/// <summary>k candidates and the selected one.</summary>
public sealed record BestOfNAnswer(IReadOnlyList<CandidateAnswer> Candidates, int WinnerIndex, SelectionMethod Method)
{
    public CandidateAnswer Winner => Candidates[WinnerIndex];
}

/// <summary>
/// A MetaStone-S1-style reflective model loaded from a Hugging Face layout directory: the Qwen2 policy,
/// its SPRM head, tokenizer, chat template and step rules, served by one <see cref="GenerationEngine"/>.
/// </summary>
public sealed class ReflectiveModel : IDisposable
{
    public const string HeadSafetensorsName = "score_module.safetensors";
    public const string HeadPickleName = "score_module.pt";

    public string Directory { get; }
    public Qwen2ForCausalLM Model { get; }
    public SprmHead? Head { get; }
    public QwenTokenizer Tokenizer { get; }
    public ChatTemplate Template { get; }
    public StepTokenSet StepRules { get; }
    public GenerationEngine Engine { get; }
    public IReadOnlyList<int> EosTokenIds { get; }

    private ReflectiveModel(string directory, Qwen2ForCausalLM model, SprmHead? head, QwenTokenizer tokenizer,
        ChatTemplate template, StepTokenSet rules, IReadOnlyList<int> eos, EngineOptions engineOptions)
    {
        Directory = directory;
        Model = model;
        Head = head;
        Tokenizer = tokenizer;
        Template = template;
        StepRules = rules;
        EosTokenIds = eos;
        Engine = new GenerationEngine(model, head, engineOptions);
    }

    /// <summary>Loads a model directory. Anything wrong with the files (truncated or hostile JSON, safetensors or pickle,
    /// wrong shapes, a broken tokenizer) is one <see cref="ModelLoadException"/> naming the directory, never a raw
    /// parser exception with a stack trace.</summary>
    public static ReflectiveModel Load(string directory, ModelLoadOptions? options = null)
    {
        try { return LoadUnchecked(directory, options); }
        catch (Exception e) when (e is not (ModelLoadException or OperationCanceledException or OutOfMemoryException))
        {
            string message = e.Message.Split('\n')[0].Trim();
            // Parser exceptions of unusual types keep their type name as a hint; the familiar ones speak for themselves.
            if (e is not (IOException or InvalidDataException or ArgumentException or FormatException or System.Text.Json.JsonException
                or Checkpoints.CheckpointFormatException or NotSupportedException or InvalidOperationException or KeyNotFoundException))
                message = $"{e.GetType().Name}: {message}";
            throw new ModelLoadException($"cannot load the model in {directory}: {message}", e);
        }
    }

    private static ReflectiveModel LoadUnchecked(string directory, ModelLoadOptions? options)
    {
        options ??= new ModelLoadOptions();
        if (!System.IO.Directory.Exists(directory))
            throw new DirectoryNotFoundException($"model directory not found: {directory}");
        var config = Qwen2Config.Load(Path.Combine(directory, "config.json"));
        var device = TorchSettings.ParseDevice(options.Device);
        var dtype = ChooseDtype(config, device, options.Dtype);

        // The tokenizer (~1 s of JSON and merge tables for Qwen's 151k tokens, managed work) is read on another thread
        // while this one reads the weights (page faults and copies) and warms up: on the 0.5B shape the load went from
        // 4.75–5.0 to 3.75–4.3 s. Its problems still win over the checkpoint's, as when it was read first.
        // Reading tokenizer.json also leaves ~45 MB of parse garbage on the managed heap (the file's vocabulary and merges
        // as strings and lists), which no later allocation collects: the weights are native memory. Left alone it stayed
        // resident next to them (generate's peak RSS on the 0.5B shape: 1.34× the file); one aggressive full collection
        // once the tokenizer exists, while the weights stream in, hands it back to the system (35 ms, off this thread).
        var tokenizerTask = Task.Run(() =>
        {
            var read = options.Tokenizer ?? QwenTokenizer.FromDirectory(directory);
            GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
            return read;
        });
        Qwen2ForCausalLM? model = null;
        QwenTokenizer tokenizer;
        ChatTemplate template;
        try
        {
            var locations = CheckpointDirectory.ReadTensorLocations(directory);
            // No default initialisation of the Linears: LoadWeights fills (and checks the presence of) every parameter.
            model = new Qwen2ForCausalLM(config, dtype, device, Math.Min(config.MaxPositionEmbeddings, Math.Max(options.MaxSequenceLength, 1)), initializeWeights: false);
            model.eval();
            if (options.KvCacheDtype is string kvDtype) model.KvDtype = TorchSettings.ParseDtype(kvDtype);
            model.LoadWeights(locations); // streamed into the parameters: one copy of the weights, not two
            if (options.WarmUp) model.WarmUp();
            tokenizer = tokenizerTask.GetAwaiter().GetResult();
            if (tokenizer.VocabSize > config.VocabSize)
                throw new InvalidDataException($"{directory}: tokenizer has {tokenizer.VocabSize} ids but config.json vocab_size is {config.VocabSize}");
            template = ChatTemplate.Detect(tokenizer, directory, options.ChatTemplate);
        }
        catch (Exception checkpointProblem)
        {
            model?.Dispose();
            // A broken tokenizer is reported ahead of a broken checkpoint (the order of the checks before).
            try { tokenizerTask.GetAwaiter().GetResult(); }
            catch (Exception tokenizerProblem) when (tokenizerProblem != checkpointProblem) { System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(tokenizerProblem); }
            throw;
        }

        var head = LoadHead(directory, config.HiddenSize, device);
        var rules = tokenizer.StepRules();
        var eos = new SortedSet<int>(config.EosTokenIds);
        if (tokenizer.EosTokenId is int e) eos.Add(e);
        var engineOptions = new EngineOptions
        {
            MaxBatch = options.MaxBatch,
            MaxSequenceLength = options.MaxSequenceLength,
            StepRules = rules,
            EosTokenIds = [.. eos],
            SharePrefix = options.SharePrefix,
            MinDecodeStep = options.MinDecodeStep,
            Name = $"metastone-engine-{options.Device}",
        };
        return new ReflectiveModel(directory, model, head, tokenizer, template, rules, [.. eos], engineOptions);
    }

    private static ScalarType ChooseDtype(Qwen2Config config, Device device, string? requested)
    {
        if (requested is not null) return TorchSettings.ParseDtype(requested);
        var fromConfig = TorchSettings.ParseDtype(config.TorchDtype);
        if (device.type == DeviceType.CPU && fromConfig != ScalarType.Float32 && !CpuFeatures.HasFastBf16)
            return ScalarType.Float32;
        return fromConfig;
    }

    /// <summary>Loads the SPRM head (safetensors preferred, else the released pickle through the restricted reader); null when the directory has none.</summary>
    public static SprmHead? LoadHead(string directory, int hiddenSize, Device device)
    {
        string st = Path.Combine(directory, HeadSafetensorsName), pt = Path.Combine(directory, HeadPickleName);
        string? path = File.Exists(st) ? st : File.Exists(pt) ? pt : null;
        if (path is null) return null;
        var tensors = path == st ? SafeTensors.Load(st) : (IReadOnlyDictionary<string, Tensor>)TorchZipCheckpoint.Load(pt);
        var head = new SprmHead(hiddenSize, device);
        try { head.Load(tensors, path); }
        catch { head.Dispose(); throw; }
        finally { foreach (var t in tensors.Values) t.Dispose(); }
        return head;
    }

    /// <summary>Chat template applied to the question, tokenized.</summary>
    public int[] EncodePrompt(string question, string? system = null)
    {
        if (string.IsNullOrWhiteSpace(question)) throw new ArgumentException("the question is empty", nameof(question));
        return Tokenizer.Encode(Template.Render(question, system));
    }

    /// <summary>Generates k candidates with seeds baseSeed, baseSeed+1, … and selects the winner.</summary>
    public async Task<BestOfNAnswer> SolveAsync(string question, int k, SamplingOptions? sampling = null, long baseSeed = 0,
        SelectionMethod method = SelectionMethod.SprmBestOfN, ScoreAggregation aggregation = ScoreAggregation.GeometricMean,
        CancellationToken cancellationToken = default)
    {
        if (k < EffortMode.MinK || k > EffortMode.MaxK) throw new ArgumentOutOfRangeException(nameof(k), k, $"k must be between {EffortMode.MinK} and {EffortMode.MaxK}");
        var request = new GenerationRequest
        {
            PromptIds = EncodePrompt(question),
            Seeds = Enumerable.Range(0, k).Select(i => baseSeed + i).ToArray(),
            Sampling = sampling ?? new SamplingOptions(),
        };
        var trajectories = await Engine.GenerateAsync(request, cancellationToken).ConfigureAwait(false);
        var candidates = trajectories.Select(t => Describe(t, aggregation)).ToList();
        int winner = CandidateSelection.SelectWinner(candidates.Select(c => new ScoredCandidate(c.Trajectory.CandidateIndex, c.Score, c.Answer)).ToList(), method);
        return new BestOfNAnswer(candidates, winner, method);
    }

    /// <summary>Decodes a trajectory (special tokens dropped) and extracts its boxed answer.</summary>
    public CandidateAnswer Describe(Trajectory t, ScoreAggregation aggregation = ScoreAggregation.GeometricMean)
    {
        string fullText = Tokenizer.Decode(t.ResponseIds.Where(id => !EosTokenIds.Contains(id)), skipSpecialTokens: false);
        string? answer = AnswerGrader.ExtractBoxed(AnswerGrader.AnswerPart(fullText));
        return new CandidateAnswer(t, fullText, answer, t.Score(aggregation));
    }

    public void Dispose()
    {
        Engine.Dispose();
        Head?.Dispose();
        Model.Dispose();
    }
}
