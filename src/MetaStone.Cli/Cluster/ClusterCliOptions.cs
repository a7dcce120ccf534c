using System.CommandLine;
using System.Runtime.CompilerServices;
using MetaStone.Client;
using MetaStone.Contracts;
using MetaStone.Grains.Jobs;
using MetaStone.Reasoning;

namespace MetaStone.Cli.Cluster;

/// <summary>The options every cluster verb shares: where the cluster is and what a job asks for.</summary>
public sealed class ClusterCliOptions
{
    public const string ClusterEnvironmentVariable = "METASTONE_CLUSTER";

    public Option<string?> Cluster { get; } = new("--cluster")
    {
        Description = $"Redis of the cluster (host:port); default ${ClusterEnvironmentVariable}, then $MetaStone__Redis.",
        HelpName = "host:port",
    };
    public Option<string> ClusterId { get; } = new("--cluster-id")
    {
        Description = "Orleans ClusterId (and ServiceId) of the cluster; default $Orleans__ClusterId / $Orleans__ServiceId, else metastone.",
        DefaultValueFactory = _ => "metastone",
    };

    public void AddTo(Command command)
    {
        command.Add(Cluster);
        command.Add(ClusterId);
    }

    /// <summary>The silos' own keys, so the client image and compose service (which set them like the silos do) find
    /// the cluster: Redis fallback after <see cref="ClusterEnvironmentVariable"/>, cluster and service id fallbacks
    /// when <c>--cluster-id</c> is not given.</summary>
    public const string RedisEnvironmentVariable = "MetaStone__Redis", ClusterIdEnvironmentVariable = "Orleans__ClusterId",
        ServiceIdEnvironmentVariable = "Orleans__ServiceId";

    /// <summary>Every environment variable the cluster verbs read.</summary>
    public static readonly string[] EnvironmentVariables =
        [ClusterEnvironmentVariable, RedisEnvironmentVariable, ClusterIdEnvironmentVariable, ServiceIdEnvironmentVariable];

    /// <summary>The named cluster, or null when none is given (ask then runs an embedded silo).</summary>
    public ClusterConnection? Connection(ParseResult parse)
    {
        static string? Env(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : null;
        string? redis = parse.GetValue(Cluster) ?? Env(ClusterEnvironmentVariable) ?? Env(RedisEnvironmentVariable);
        if (string.IsNullOrWhiteSpace(redis)) return null;
        var given = parse.GetResult(ClusterId);
        if (given is not null && !given.Implicit)
        {
            string id = parse.GetValue(ClusterId)!;
            return new ClusterConnection(redis, id, id);
        }
        string cluster = Env(ClusterIdEnvironmentVariable) ?? parse.GetValue(ClusterId)!;
        return new ClusterConnection(redis, cluster, Env(ServiceIdEnvironmentVariable) ?? cluster);
    }

    public ClusterConnection RequiredConnection(ParseResult parse) =>
        Connection(parse) ?? throw new ArgumentException($"no cluster given: pass --cluster host:port (the cluster's Redis) or set {ClusterEnvironmentVariable}");
}

/// <summary>
/// The sampling options of every verb that generates (ask, submit, generate, sweep): one spelling and one set of defaults
/// (<see cref="SamplingDefaults"/>) for the one sampling record, <see cref="SamplingSettings"/>. The thinking budget is not
/// here: a job has one (<c>--budget</c>, in <see cref="JobCliOptions"/>), a sweep a list (<c>--budgets</c>).
/// </summary>
public sealed class SamplingCliOptions
{
    private static readonly ConditionalWeakTable<Command, SamplingCliOptions> Added = new();

    public Option<int> MaxNewTokens { get; } = new("--max-new-tokens") { Description = "Limit on generated tokens per candidate (thinking + answer).", DefaultValueFactory = _ => SamplingDefaults.MaxNewTokens };
    public Option<double> Temperature { get; } = new("--temperature") { Description = "Sampling temperature (0 = greedy).", DefaultValueFactory = _ => SamplingDefaults.Temperature };
    public Option<double> TopP { get; } = new("--top-p") { Description = "Nucleus sampling mass, in (0, 1].", DefaultValueFactory = _ => SamplingDefaults.TopP };
    public Option<double> RepetitionPenalty { get; } = new("--repetition-penalty") { Description = "HF-style repetition penalty (1 = off).", DefaultValueFactory = _ => SamplingDefaults.RepetitionPenalty };

    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { MaxNewTokens, Temperature, TopP, RepetitionPenalty }) command.Add(option);
        Added.AddOrUpdate(command, this);
    }

    /// <summary>The set a verb added (so tests can read what each verb parses); throws if the verb has none.</summary>
    public static SamplingCliOptions Of(Command command) =>
        Added.TryGetValue(command, out var options) ? options : throw new ArgumentException($"'{command.Name}' has no sampling options");

    /// <summary>The sampling record the options describe (not yet checked: <see cref="JobRequestRules"/> does that).</summary>
    public SamplingSettings Settings(ParseResult parse) => new()
    {
        MaxNewTokens = parse.GetValue(MaxNewTokens),
        Temperature = parse.GetValue(Temperature),
        TopP = parse.GetValue(TopP),
        RepetitionPenalty = parse.GetValue(RepetitionPenalty),
    };
}

/// <summary>Options describing one job: the one option set of ask, submit and generate (with <see cref="SamplingCliOptions"/>).</summary>
public sealed class JobCliOptions
{
    private static readonly ConditionalWeakTable<Command, JobCliOptions> Added = new();

    public Argument<string?> Prompt { get; } = new("prompt") { Description = "The question; - reads it from standard input.", Arity = ArgumentArity.ZeroOrOne };
    public Option<string?> PromptFile { get; } = new("--prompt-file") { Description = "Read the question from this file (UTF-8) instead of the argument.", HelpName = "FILE" };
    public Option<string?> Effort { get; } = new("--effort") { Description = "low | medium | high = k 2 / 8 / 32 (default medium).", HelpName = "low|medium|high" };
    public Option<int?> K { get; } = new("--k") { Description = $"Explicit number of candidates ({EffortMode.MinK}–{EffortMode.MaxK}); overrides --effort." };
    public Option<int?> Budget { get; } = new("--budget") { Description = "Thinking budget in tokens: then </think> is forced." };
    public Option<string> Selection { get; } = new("--selection") { Description = "Winner selection: bon (SPRM Best-of-N) | majority | weighted.", DefaultValueFactory = _ => WinnerSelection.BestOfN.Name() };
    public Option<long> Seed { get; } = new("--seed") { Description = "Candidate i uses seed + i.", DefaultValueFactory = _ => 0 };
    public SamplingCliOptions Sampling { get; } = new();

    public void AddTo(Command command)
    {
        // The old spellings (of `metastone generate`, and the other way round) keep working: one vocabulary for every verb.
        K.Aliases.Add("--n");
        Budget.Aliases.Add("--thinking-budget");
        Selection.Aliases.Add("--select");
        command.Add(Prompt);
        foreach (var option in new Option[] { PromptFile, Effort, K, Budget, Selection, Seed }) command.Add(option);
        Sampling.AddTo(command);
        Added.AddOrUpdate(command, this);
    }

    /// <summary>The set a verb added (so tests can read what each verb parses); throws if the verb has none.</summary>
    public static JobCliOptions Of(Command command) =>
        Added.TryGetValue(command, out var options) ? options : throw new ArgumentException($"'{command.Name}' has no job options");

    /// <summary>
    /// The request the options describe, checked by the cluster's own rules (<see cref="JobRequestRules"/>) before
    /// anything starts: a bad effort or k is reported at once, not after an embedded silo took seconds to load.
    /// </summary>
    public JobRequest Request(ParseResult parse)
    {
        var request = Unchecked(parse);
        JobRequestRules.Validate(request);
        return request;
    }

    private string ReadPrompt(ParseResult parse)
    {
        string? argument = parse.GetValue(Prompt);
        if (parse.GetValue(PromptFile) is { } file)
        {
            if (argument is not null) throw new ArgumentException("give the question either as an argument or with --prompt-file, not both");
            try { return File.ReadAllText(file).TrimEnd('\r', '\n'); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new ArgumentException($"cannot read --prompt-file '{file}': {e.Message}"); }
        }
        // A file or pipe usually ends with a newline that is not part of the question.
        if (argument == "-") return Console.In.ReadToEnd().TrimEnd('\r', '\n');
        return argument ?? throw new ArgumentException("no question given: pass it as an argument, with --prompt-file FILE, or as - to read standard input");
    }

    private JobRequest Unchecked(ParseResult parse) => new()
    {
        Prompt = ReadPrompt(parse),
        Effort = parse.GetValue(Effort) is { } effort ? RequestText.ParseEffort(effort) : null,
        K = parse.GetValue(K),
        Sampling = Sampling.Settings(parse) with { ThinkingBudget = parse.GetValue(Budget) },
        Selection = RequestText.ParseSelection(parse.GetValue(Selection)!),
        Seed = parse.GetValue(Seed),
    };
}
