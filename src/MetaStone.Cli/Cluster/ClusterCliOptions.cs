using System.CommandLine;
using MetaStone.Client;
using MetaStone.Contracts;

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

/// <summary>Options describing one job (ask and submit).</summary>
public sealed class JobCliOptions
{
    public Argument<string?> Prompt { get; } = new("prompt") { Description = "The question; - reads it from standard input.", Arity = ArgumentArity.ZeroOrOne };
    public Option<string?> PromptFile { get; } = new("--prompt-file") { Description = "Read the question from this file (UTF-8) instead of the argument.", HelpName = "FILE" };
    public Option<string?> Effort { get; } = new("--effort") { Description = "low | medium | high = k 2 / 8 / 32 (default medium).", HelpName = "low|medium|high" };
    public Option<int?> K { get; } = new("--k") { Description = "Explicit number of candidates (1–256); overrides --effort." };
    public Option<int?> Budget { get; } = new("--budget") { Description = "Thinking budget in tokens." };
    public Option<int> MaxNewTokens { get; } = new("--max-new-tokens") { Description = "Limit on generated tokens per candidate (thinking + answer).", DefaultValueFactory = _ => SamplingDefaults.MaxNewTokens };
    public Option<double> Temperature { get; } = new("--temperature") { DefaultValueFactory = _ => SamplingDefaults.Temperature };
    public Option<string> Selection { get; } = new("--selection") { Description = "bon (SPRM Best-of-N) | majority | weighted.", DefaultValueFactory = _ => "bon" };
    public Option<long> Seed { get; } = new("--seed") { Description = "Candidate i uses seed + i.", DefaultValueFactory = _ => 0 };

    public void AddTo(Command command)
    {
        // The spellings of `metastone generate` work here too (and this set's in generate): one vocabulary for every verb.
        K.Aliases.Add("--n");
        Budget.Aliases.Add("--thinking-budget");
        Selection.Aliases.Add("--select");
        command.Add(Prompt);
        foreach (var option in new Option[] { PromptFile, Effort, K, Budget, MaxNewTokens, Temperature, Selection, Seed }) command.Add(option);
    }

    /// <summary>
    /// The request the options describe, checked by the cluster's own rules (<see cref="MetaStone.Grains.Jobs.JobRequestRules"/>) before
    /// anything starts: a bad effort or k is reported at once, not after an embedded silo took seconds to load.
    /// </summary>
    public JobRequest Request(ParseResult parse)
    {
        var request = Unchecked(parse);
        MetaStone.Grains.Jobs.JobRequestRules.Validate(request);
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
        Effort = parse.GetValue(Effort),
        K = parse.GetValue(K),
        ThinkingBudget = parse.GetValue(Budget),
        MaxNewTokens = parse.GetValue(MaxNewTokens),
        Temperature = parse.GetValue(Temperature),
        Selection = parse.GetValue(Selection)!,
        Seed = parse.GetValue(Seed),
    };
}
