using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using MetaStone.Cli.Cluster;
using MetaStone.Contracts;
using MetaStone.Grains.Jobs;
using MetaStone.Model;
using MetaStone.Model.Checkpoints;
using MetaStone.Model.Generation;
using MetaStone.Model.Tokenization;
using MetaStone.Reasoning;

namespace MetaStone.Cli.Commands;

/// <summary>
/// <c>metastone generate "PROMPT" [--model DIR] [--k 8] …</c>: loads a reflective model, samples k candidate
/// trajectories that the SPRM head scores in flight, prints every candidate and the selected winner.
/// </summary>
public sealed class GenerateCommand : ICliVerb
{
    /// <summary>Bad arguments or an unusable model directory.</summary>
    public const int UsageErrorExitCode = 2;
    /// <summary>Interrupted (Ctrl-C), as shells report SIGINT.</summary>
    public const int CancelledExitCode = ExitCodes.Interrupted;
    /// <summary>Characters of each candidate's text shown in the listing (the winner is printed in full).</summary>
    public const int PreviewLength = 120;
    /// <summary>Step scores shown per candidate in the text listing (JSON has all of them).</summary>
    public const int ShownStepScores = 10;

    public static Command Create()
    {
        // The question, k / effort, budget, selection, seed and sampling: the option set of ask and submit (the chat template is applied to the question).
        var job = new JobCliOptions();
        var model = new Option<string?>("--model")
        {
            Description = $"Model directory (config.json, model.safetensors, tokenizer.json, score_module.safetensors). Default: {ModelDirectoryResolver.DefaultModelRelativePath} in the repository.",
            HelpName = "DIR",
        };
        // Only the local engine has these two (the cluster's sampling record does not).
        var topK = new Option<int>("--top-k") { Description = "Top-k cut (0 = off).", DefaultValueFactory = _ => 0 };
        var answerBudget = new Option<int?>("--answer-budget") { Description = "Tokens allowed after </think>." };
        var dtype = new Option<string?>("--dtype") { Description = "fp32, bf16 or fp16 (default: the config's, fp32 on a CPU without fast bf16)." };
        var device = new Option<string>("--device") { Description = "cpu or cuda:N.", DefaultValueFactory = _ => "cpu" };
        var template = new Option<string?>("--template") { Description = $"Chat template: {string.Join(", ", ChatTemplate.ValidNames)} (default: detected from the tokenizer)." };
        var aggregate = new Option<string>("--aggregate") { Description = "Step scores → trajectory score: geomean, min, last, mean.", DefaultValueFactory = _ => "geomean" };
        var json = JsonOutput.CreateOption();

        var command = new Command("generate", "Sample k candidate answers, score their reasoning steps with the SPRM head, and print them with the winner.");
        job.AddTo(command);
        foreach (var option in new Option[] { topK, answerBudget, model, dtype, device, template, aggregate, json }) command.Add(option);
        command.SetAction(async (parseResult, cancellationToken) =>
        {
            var error = parseResult.InvocationConfiguration.Error;
            GenerateSettings settings;
            try
            {
                JobRequest request;
                try { request = job.Request(parseResult); }
                catch (ArgumentException e) { throw new GenerateUsageException(e.Message); }
                settings = new GenerateSettings
                {
                    Prompt = request.Prompt,
                    ModelDirectory = parseResult.GetValue(model),
                    Candidates = JobRequestRules.CandidateCount(request.Effort, request.K),
                    Seed = request.Seed,
                    Sampling = ModelMapping.ToSamplingOptions(request.Sampling) with
                    {
                        TopK = parseResult.GetValue(topK),
                        AnswerBudget = parseResult.GetValue(answerBudget),
                    },
                    Dtype = parseResult.GetValue(dtype),
                    Device = parseResult.GetValue(device) ?? "cpu",
                    Template = parseResult.GetValue(template),
                    Selection = ModelMapping.ToSelectionMethod(request.Selection),
                    Aggregation = ParseChoice(() => TrajectoryScore.Parse(parseResult.GetValue(aggregate) ?? "geomean"), "--aggregate"),
                };
                settings.Validate();
            }
            catch (GenerateUsageException e)
            {
                error.WriteLine($"metastone generate: {e.Message}");
                return UsageErrorExitCode;
            }

            try
            {
                var report = await RunAsync(settings, cancellationToken).ConfigureAwait(false);
                var output = parseResult.InvocationConfiguration.Output;
                if (parseResult.GetValue(json)) JsonOutput.Write(output, report);
                else WriteText(output, report);
                return 0;
            }
            catch (GenerateUsageException e)
            {
                error.WriteLine($"metastone generate: {e.Message}");
                return UsageErrorExitCode;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                error.WriteLine("metastone generate: cancelled");
                return CancelledExitCode;
            }
        });
        return command;
    }

    private static T ParseChoice<T>(Func<T> parse, string optionName)
    {
        try { return parse(); }
        catch (ArgumentException e) { throw new GenerateUsageException($"{optionName}: {e.Message}"); }
    }

    /// <summary>Loads the model, generates, and describes the result; argument and model-directory problems become <see cref="GenerateUsageException"/>.</summary>
    public static async Task<GenerateReport> RunAsync(GenerateSettings settings, CancellationToken cancellationToken)
    {
        var directory = settings.ModelDirectory;
        if (directory is null)
        {
            var (resolved, problem) = ModelDirectoryResolver.ResolveDefault(ModelDirectoryResolver.FindRepositoryRoot());
            directory = resolved ?? throw new GenerateUsageException(problem!);
        }
        directory = Path.GetFullPath(directory);
        if (!Directory.Exists(directory))
            throw new GenerateUsageException($"model directory not found: {directory}");

        // The prompt is tokenized before the model loads so the engine's KV cache can be sized to prompt +
        // max-new-tokens instead of the model's whole context window (which for real models times k slots
        // would be gigabytes). The model then reuses this tokenizer instead of reading it again.
        int[] promptIds;
        int contextWindow;
        QwenTokenizer tokenizer;
        try
        {
            var config = Qwen2Config.Load(Path.Combine(directory, "config.json"));
            tokenizer = QwenTokenizer.FromDirectory(directory);
            var chatTemplate = ChatTemplate.Detect(tokenizer, directory, settings.Template);
            promptIds = tokenizer.Encode(chatTemplate.Render(settings.Prompt));
            contextWindow = config.MaxPositionEmbeddings;
        }
        catch (Exception e) when (IsModelDirectoryProblem(e))
        {
            throw new GenerateUsageException($"cannot load the model in {directory}: {e.Message}");
        }
        if (promptIds.Length >= contextWindow)
            throw new GenerateUsageException($"the prompt is {promptIds.Length} tokens after the chat template, but the model's context window is {contextWindow} tokens (it must leave room for at least one generated token)");

        cancellationToken.ThrowIfCancellationRequested();
        var loadTimer = Stopwatch.StartNew();
        ReflectiveModel reflective;
        try
        {
            reflective = ReflectiveModel.Load(directory, new ModelLoadOptions
            {
                Device = settings.Device,
                Dtype = settings.Dtype,
                ChatTemplate = settings.Template,
                Tokenizer = tokenizer, // read once, above
                // More candidates than slots queue and join as slots free up (continuous batching).
                MaxBatch = Math.Min(settings.Candidates, GenerateSettings.MaxBatch),
                MaxSequenceLength = Math.Min(contextWindow, promptIds.Length + settings.Sampling.MaxNewTokens),
            });
        }
        catch (Exception e) when (IsModelDirectoryProblem(e))
        {
            throw new GenerateUsageException(e is ModelLoadException ? e.Message : $"cannot load the model in {directory}: {e.Message}");
        }
        using (reflective)
        {
            if (reflective.Head is null)
                throw new GenerateUsageException($"{directory} has no SPRM head ({ReflectiveModel.HeadSafetensorsName} or {ReflectiveModel.HeadPickleName}): steps cannot be scored");
            double loadSeconds = loadTimer.Elapsed.TotalSeconds;
            cancellationToken.ThrowIfCancellationRequested();

            var generateTimer = Stopwatch.StartNew();
            var answer = await reflective.SolveAsync(settings.Prompt, settings.Candidates, settings.Sampling, settings.Seed,
                settings.Selection, settings.Aggregation, cancellationToken).ConfigureAwait(false);
            double generateSeconds = generateTimer.Elapsed.TotalSeconds;

            var candidates = answer.Candidates.Select(c => new CandidateReport(
                Index: c.Trajectory.CandidateIndex,
                Seed: c.Trajectory.Seed,
                FinishReason: ModelMapping.ToFinishReason(c.Trajectory.FinishReason),
                ThinkingTokens: c.Trajectory.ThinkingTokens,
                AnswerTokens: c.Trajectory.AnswerTokens,
                ResponseTokens: c.Trajectory.ResponseIds.Length,
                StepScores: c.Trajectory.Steps.Select(s => s.Score).ToList(),
                Score: c.Score,
                Answer: c.Answer,
                Preview: Preview(c.Text))).ToList();
            var winner = answer.Winner;
            return new GenerateReport(
                Model: directory,
                Prompt: settings.Prompt,
                PromptTokens: promptIds.Length,
                Dtype: TorchSettings.DtypeName(reflective.Model.Dtype),
                Device: settings.Device,
                Template: reflective.Template.Name,
                Selection: ModelMapping.ToWinnerSelection(answer.Method),
                Aggregation: AggregationName(settings.Aggregation),
                Seed: settings.Seed,
                Candidates: candidates,
                WinnerIndex: winner.Trajectory.CandidateIndex,
                Winner: new WinnerReport(winner.Trajectory.CandidateIndex, winner.Score, winner.Answer, winner.Text),
                LoadSeconds: loadSeconds,
                GenerateSeconds: generateSeconds,
                GeneratedTokens: candidates.Sum(c => c.ResponseTokens));
        }
    }

    /// <summary>Failures that mean "this directory is not a usable model" (as opposed to bugs, which keep their stack trace).</summary>
    private static bool IsModelDirectoryProblem(Exception e) =>
        e is IOException or InvalidDataException or CheckpointFormatException or JsonException or UnauthorizedAccessException
            or ArgumentException or NotSupportedException;

    private static string Preview(string text)
    {
        var flat = text.ReplaceLineEndings("⏎");
        return flat.Length <= PreviewLength ? flat : flat[..PreviewLength] + "…";
    }

    private static string AggregationName(ScoreAggregation aggregation) => aggregation switch
    {
        ScoreAggregation.GeometricMean => "geomean",
        _ => aggregation.ToString().ToLowerInvariant(),
    };

    private static void WriteText(TextWriter output, GenerateReport report)
    {
        var inv = CultureInfo.InvariantCulture;
        output.WriteLine($"model {report.Model} ({report.Dtype}, {report.Device}), template {report.Template}, prompt {report.PromptTokens} tokens");
        output.WriteLine(string.Create(inv, $"{report.Candidates.Count} candidates, {report.GeneratedTokens} tokens in {report.GenerateSeconds:F1} s ({report.GeneratedTokens / Math.Max(report.GenerateSeconds, 1e-9):F1} tok/s; load {report.LoadSeconds:F1} s), selection {report.Selection.Name()}, score {report.Aggregation}"));
        output.WriteLine();
        foreach (var c in report.Candidates)
        {
            output.WriteLine(string.Create(inv,
                $"#{c.Index,-3} seed {c.Seed,-6} {c.FinishReason.Name(),-9} think {c.ThinkingTokens,5} answer {c.AnswerTokens,5}  score {c.Score:F3}  answer {c.Answer ?? "-"}"));
            output.WriteLine($"     steps {FormatSteps(c.StepScores)}");
            output.WriteLine($"     {c.Preview}");
        }
        output.WriteLine();
        output.WriteLine(string.Create(inv, $"winner: #{report.Winner.Index} (score {report.Winner.Score:F3}, answer {report.Winner.Answer ?? "-"})"));
        output.WriteLine(report.Winner.Text);
    }

    private static string FormatSteps(IReadOnlyList<double> scores)
    {
        if (scores.Count == 0) return "[] (no scored steps)";
        var text = new StringBuilder("[");
        text.AppendJoin(' ', scores.Take(ShownStepScores).Select(s => s.ToString("F2", CultureInfo.InvariantCulture)));
        if (scores.Count > ShownStepScores) text.Append(CultureInfo.InvariantCulture, $" … +{scores.Count - ShownStepScores} more");
        return text.Append(CultureInfo.InvariantCulture, $"] ({scores.Count} steps)").ToString();
    }
}

/// <summary>What <c>generate</c> was asked to do.</summary>
public sealed record GenerateSettings
{
    /// <summary>KV-cache slots at most; larger k queue behind them.</summary>
    public const int MaxBatch = 32;

    public required string Prompt { get; init; }
    /// <summary>Null = the repository's default tiny model.</summary>
    public string? ModelDirectory { get; init; }
    public int Candidates { get; init; } = 8;
    public long Seed { get; init; }
    public SamplingOptions Sampling { get; init; } = new();
    public string? Dtype { get; init; }
    public string Device { get; init; } = "cpu";
    public string? Template { get; init; }
    public SelectionMethod Selection { get; init; } = SelectionMethod.SprmBestOfN;
    public ScoreAggregation Aggregation { get; init; } = ScoreAggregation.GeometricMean;

    /// <summary>Checks everything that can be checked without the model; throws <see cref="GenerateUsageException"/>.</summary>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(Prompt)) throw new GenerateUsageException("the prompt is empty");
        if (Candidates < EffortMode.MinK || Candidates > EffortMode.MaxK)
            throw new GenerateUsageException($"k must be between {EffortMode.MinK} and {EffortMode.MaxK}, got {Candidates}");
        try { Sampling.Validate(); }
        catch (ArgumentOutOfRangeException e) { throw new GenerateUsageException(FirstLine(e.Message)); }
        if (Dtype is not null)
        {
            try { TorchSettings.ParseDtype(Dtype); }
            catch (ArgumentException e) { throw new GenerateUsageException($"--dtype: {FirstLine(e.Message)}"); }
        }
        if (Template is not null)
        {
            try { ChatTemplate.ParseName(Template); }
            catch (ArgumentException e) { throw new GenerateUsageException($"--template: {FirstLine(e.Message)}"); }
        }
        var device = Device.Trim().ToLowerInvariant();
        if (device != "cpu" && device != "cuda" && !device.StartsWith("cuda:", StringComparison.Ordinal))
            throw new GenerateUsageException($"--device: unknown device '{Device}' (valid: cpu, cuda, cuda:N)");
    }

    // ArgumentException appends "(Parameter 'x')" lines; users need only the sentence.
    private static string FirstLine(string message) => message.Split('\n')[0].Split(" (Parameter '")[0];
}

/// <summary>A problem with the arguments or the model directory: reported on stderr without a stack trace, exit code 2.</summary>
public sealed class GenerateUsageException(string message) : Exception(message);

/// <summary>The <c>--json</c> document of <c>generate</c>.</summary>
public sealed record GenerateReport(
    string Model, string Prompt, int PromptTokens, string Dtype, string Device, string Template, WinnerSelection Selection, string Aggregation,
    long Seed, IReadOnlyList<CandidateReport> Candidates, int WinnerIndex, WinnerReport Winner,
    double LoadSeconds, double GenerateSeconds, int GeneratedTokens);

/// <summary>One candidate trajectory: how it ended, its step scores (sigmoid of the SPRM logits) and a text preview.</summary>
public sealed record CandidateReport(
    int Index, long Seed, CandidateFinishReason FinishReason, int ThinkingTokens, int AnswerTokens, int ResponseTokens,
    IReadOnlyList<double> StepScores, double Score, string? Answer, string Preview);

/// <summary>The selected candidate with its full text.</summary>
public sealed record WinnerReport(int Index, double Score, string? Answer, string Text);
