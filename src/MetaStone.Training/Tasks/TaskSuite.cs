using System.Globalization;

namespace MetaStone.Training.Tasks;

/// <summary>The task families the shipped model is trained on; the prompt says which one a question is.</summary>
public enum TaskFamily
{
    /// <summary>Left-to-right arithmetic chains: one way to the answer, slips are the errors (majority vote's home ground).</summary>
    Chain,
    /// <summary>Countdown search: many attempts, few succeed, success is visible in the text (the verifier's home ground).</summary>
    Search,
}

/// <summary>
/// One problem of any family, as the trainers and the evaluation see it: the user prompt, the expected answer
/// (a number for chains, a <see cref="MetaStone.Reasoning.CountdownSpec"/> for search), and one reference solution
/// (the assistant text after <c>&lt;think&gt;\n</c>, without the closing <c>&lt;|im_end|&gt;</c>).
/// </summary>
public sealed record TaskProblem(string Id, TaskFamily Family, string Prompt, string Answer, string Solution)
{
    public TaskExample ToExample() => new(Prompt, Answer, Id);
}

/// <summary>
/// Both task families behind one generator: <see cref="Generate"/> interleaves them by <see cref="SearchFraction"/>
/// (a pure function of split, count and seed), or yields one family only.
/// </summary>
public sealed class TaskSuite(ArithmeticChainTask? chain = null, CountdownTask? search = null, double searchFraction = 0.5)
{
    public ArithmeticChainTask Chain { get; } = chain ?? new ArithmeticChainTask();
    public CountdownTask Search { get; } = search ?? new CountdownTask();
    public double SearchFraction { get; } = searchFraction is >= 0 and <= 1 ? searchFraction
        : throw new ArgumentOutOfRangeException(nameof(searchFraction), searchFraction, "must be within 0..1");

    public static string NameOf(TaskFamily family) => family switch { TaskFamily.Chain => "chain", TaskFamily.Search => "search", _ => family.ToString() };

    public static TaskFamily ParseFamily(string name) => name.Trim().ToLowerInvariant() switch
    {
        "chain" or "arithmetic" => TaskFamily.Chain,
        "search" or "countdown" => TaskFamily.Search,
        _ => throw new ArgumentException($"unknown task family '{name}' (valid: chain, search)"),
    };

    /// <summary>Which family a prompt belongs to, or null when it is neither task's prompt.</summary>
    public static TaskFamily? FamilyOfPrompt(string prompt) =>
        CountdownTask.TryParsePrompt("", prompt) is not null ? TaskFamily.Search
        : ArithmeticChainTask.TryParsePrompt("", prompt) is not null ? TaskFamily.Chain
        : null;

    /// <summary>
    /// Whether position <paramref name="index"/> of a mixed sequence (problems of a set, or steps of policy training) is a search
    /// one: ⌊(i+1)·f⌋ &gt; ⌊i·f⌋ for f = <see cref="SearchFraction"/>, so every prefix holds the right share.
    /// </summary>
    public bool IsSearchAt(int index) => Math.Floor((index + 1) * SearchFraction) > Math.Floor(index * SearchFraction);

    /// <summary>
    /// <paramref name="count"/> problems of <paramref name="split"/>: of one <paramref name="family"/>, or both mixed by <see cref="IsSearchAt"/>.
    /// </summary>
    public IReadOnlyList<TaskProblem> Generate(string split, int count, int seed, TaskFamily? family = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        int searchCount = family switch
        {
            TaskFamily.Search => count,
            TaskFamily.Chain => 0,
            _ => (int)Math.Floor(count * SearchFraction),
        };
        // The chain stream keeps the seed it always had, so the chain problems of a split are the same as before this suite existed.
        using var chains = Chain.Generate(split, count - searchCount, seed).GetEnumerator();
        using var searches = Search.Generate(split, searchCount, seed).GetEnumerator();
        var result = new List<TaskProblem>(count);
        for (int i = 0; i < count; i++)
        {
            bool isSearch = family switch
            {
                TaskFamily.Search => true,
                TaskFamily.Chain => false,
                _ => IsSearchAt(i),
            };
            if (isSearch && searches.MoveNext()) result.Add(FromSearch(searches.Current, seed));
            else if (chains.MoveNext()) result.Add(FromChain(chains.Current));
            else if (searches.MoveNext()) result.Add(FromSearch(searches.Current, seed));
        }
        return result;
    }

    public static TaskProblem FromChain(ArithmeticProblem p) =>
        new(p.Id, TaskFamily.Chain, p.Prompt, p.AnswerText, ArithmeticChainTask.Solution(p));

    public TaskProblem FromSearch(CountdownProblem p, int traceSeed) =>
        new(p.Id, TaskFamily.Search, p.Prompt, p.Spec.ToString(), Search.Solution(p, unchecked((ulong)traceSeed)));

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"chain + search (search fraction {SearchFraction:0.##})");
}
