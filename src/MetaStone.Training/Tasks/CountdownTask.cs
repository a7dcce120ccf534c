using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using MetaStone.Reasoning;

namespace MetaStone.Training.Tasks;

/// <summary>Difficulty knobs of <see cref="CountdownTask"/>.</summary>
public sealed record CountdownTaskOptions
{
    /// <summary>How many numbers a problem gives.</summary>
    public int Count { get; init; } = 3;
    public int MinNumber { get; init; } = 2;
    public int MaxNumber { get; init; } = 20;
    public int MinTarget { get; init; } = 10;
    /// <summary>Largest target, and the largest value any step of a reference attempt may reach (keeps the arithmetic two-digit).</summary>
    public int MaxValue { get; init; } = 99;
    /// <summary>Attempts a reference trace makes before it gives up (answers <c>none</c>): the search budget the policy imitates.</summary>
    public int MaxAttempts { get; init; } = 3;

    public void Validate()
    {
        if (Count < 2 || MinNumber < 1 || MaxNumber < MinNumber || MinTarget < 1 || MaxValue < MinTarget || MaxAttempts < 1)
            throw new ArgumentException($"invalid countdown options: {this}");
    }
}

/// <summary>A Countdown problem: reach <see cref="Target"/> with <see cref="Numbers"/> (in prompt order).</summary>
public sealed record CountdownProblem(string Id, string Prompt, long Target, IReadOnlyList<long> Numbers)
{
    public CountdownSpec Spec => new(Target, Numbers);
    /// <summary>Canonical text (sorted numbers): decides the split, so a re-ordered prompt is the same problem.</summary>
    public string Canonical => CountdownTask.CanonicalOf(Target, Numbers);
}

/// <summary>
/// The search family: Countdown-style problems ("Reach 78 with 9, 2, 7, 3 using + - * /, each number at most once.")
/// whose reference solutions are honest searches. Producing a right answer needs search; whether an attempt
/// succeeded is decidable from the text already written.
/// </summary>
/// <remarks>
/// Trace format: one step per attempt. An attempt combines all the numbers left to right in an order it picks, one
/// operation at a time, each result written out (<c>9 * 7 = 63, + 3 = 66, + 2 = 68</c>); values stay in
/// 1..<see cref="CountdownTaskOptions.MaxValue"/> and divisions are exact. The attempt then checks itself in the
/// open: it copies the target next to its result and says whether they are equal (<c>… + 2 = 68 vs 78, no.\n\n</c>,
/// <c>… + 2 = 68 vs 68, yes.\n\n</c>). The check is local on purpose: the two numbers are a few tokens apart, so the
/// policy can learn the comparison, and the token the SPRM reads (the one before <c>.\n\n</c>) is the policy's own
/// verdict. (The first design ended a success right after the result and needed a comparison with the prompt's
/// target 60 tokens back; a 4-layer policy never learned it: docs/experiments/search-family-attempt.md.) After a
/// success the answer follows (<c>&lt;/think&gt;\n\n\boxed{((9 * 7) + 3) + 2}</c>, fully parenthesised, left to
/// right); after <see cref="CountdownTaskOptions.MaxAttempts"/> failed attempts the trace says so in a step of its
/// own (<c>Out of attempts.\n\n</c>) and answers <c>\boxed{none}</c>. Attempts are drawn uniformly (random order,
/// random valid operations), never repeated within a trace, so the reference itself succeeds on only part of the
/// problems: whether a trajectory is right depends on its search, not on its arithmetic.
/// </remarks>
public sealed partial class CountdownTask(CountdownTaskOptions? options = null)
{
    public const string GiveUpAnswer = "none";
    /// <summary>Words of an attempt's check: <c>68 vs 78, no</c>.</summary>
    public const string CompareWord = "vs", SuccessWord = "yes", FailureWord = "no";
    /// <summary>The step a trace ends its search with when its attempts are used up (before <c>\boxed{none}</c>).</summary>
    public const string GiveUpStep = "Out of attempts" + TaskChatFormat.StepEnd;
    private static readonly char[] OperatorOrder = ['+', '-', '*', '/'];

    public CountdownTaskOptions Options { get; } = Validated(options ?? new CountdownTaskOptions());

    private static CountdownTaskOptions Validated(CountdownTaskOptions o) { o.Validate(); return o; }

    public static string CanonicalOf(long target, IEnumerable<long> numbers) =>
        string.Create(CultureInfo.InvariantCulture, $"countdown {target} from {string.Join(',', numbers.Order())}");

    public static string PromptFor(long target, IReadOnlyList<long> numbers) =>
        string.Create(CultureInfo.InvariantCulture, $"Reach {target} with {string.Join(", ", numbers)} using + - * /, each number at most once.");

    /// <summary>Parses a prompt written by <see cref="PromptFor"/>; null for any other text.</summary>
    public static CountdownProblem? TryParsePrompt(string id, string prompt)
    {
        var match = PromptPattern().Match(prompt);
        if (!match.Success) return null;
        var target = long.Parse(match.Groups["target"].Value, CultureInfo.InvariantCulture);
        var numbers = match.Groups["n"].Captures.Select(c => long.Parse(c.Value, CultureInfo.InvariantCulture)).ToArray();
        return new CountdownProblem(id, prompt, target, numbers);
    }

    /// <summary>
    /// <paramref name="count"/> distinct problems of <paramref name="split"/>, a pure function of (split, count, seed, options).
    /// Every problem is solvable: its target is the value of one random attempt.
    /// </summary>
    public IEnumerable<CountdownProblem> Generate(string split, int count, int seed)
    {
        var splitIndex = TaskSplits.IndexOf(split);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        return Iterate();

        IEnumerable<CountdownProblem> Iterate()
        {
            var random = new SplitMix64(SplitMix64.Mix(SplitMix64.Mix((ulong)(uint)seed, (ulong)splitIndex), 0xC0DE));
            var seen = new HashSet<string>(StringComparer.Ordinal);
            int produced = 0;
            long draws = 0;
            while (produced < count)
            {
                if (++draws > 1000L * (count + 100))
                    throw new InvalidOperationException($"Could not draw {count} distinct '{split}' countdown problems; the options allow too few.");
                var numbers = Enumerable.Range(0, Options.Count).Select(_ => random.NextInclusive(Options.MinNumber, Options.MaxNumber)).ToArray();
                var attempt = DrawAttempt(numbers, random);
                long target = attempt[^1].Result;
                if (target < Options.MinTarget || target > Options.MaxValue) continue;
                var canonical = CanonicalOf(target, numbers);
                if (TaskSplits.SplitOf(canonical) != split || !seen.Add(canonical)) continue;
                var id = string.Create(CultureInfo.InvariantCulture, $"{split}-search-{seed}-{produced:D6}");
                yield return new CountdownProblem(id, PromptFor(target, numbers), target, numbers);
                produced++;
            }
        }
    }

    /// <summary>One operation of an attempt: running value <paramref name="Left"/> op <paramref name="Operand"/> = <paramref name="Result"/>.</summary>
    public readonly record struct Operation(long Left, char Op, long Operand, long Result);

    /// <summary>
    /// The reference solution for <paramref name="problem"/>: up to MaxAttempts distinct random attempts, stopping at the
    /// first that reaches the target, then the answer. A pure function of (problem, traceSeed).
    /// </summary>
    public string Solution(CountdownProblem problem, ulong traceSeed)
    {
        var random = new SplitMix64(SplitMix64.Mix(traceSeed, TaskSplits.Fnv1a64(problem.Canonical)));
        var text = new StringBuilder();
        var tried = new HashSet<string>(StringComparer.Ordinal);
        List<Operation>? success = null;
        for (int attempt = 0; attempt < Options.MaxAttempts && success is null; attempt++)
        {
            List<Operation> ops = [];
            string step = "";
            for (int redraw = 0; redraw < 20; redraw++)
            {
                ops = DrawAttempt(problem.Numbers, random);
                step = FormatAttempt(ops, problem.Target);
                if (tried.Add(step)) break;
            }
            text.Append(step);
            if (ops[^1].Result == problem.Target) success = ops;
        }
        if (success is null) text.Append(GiveUpStep);
        text.Append(TaskChatFormat.ThinkClose).Append("\n\n").Append(@"\boxed{")
            .Append(success is null ? GiveUpAnswer : FormatExpression(success)).Append('}');
        return text.ToString();
    }

    /// <summary>
    /// A step: <c>9 * 7 = 63, + 3 = 66, + 2 = 68 vs 68, yes.\n\n</c> (target reached) or <c>… + 5 = 76 vs 68, no.\n\n</c>.
    /// The running value is not repeated after the first operation (keeps five attempts inside the context).
    /// </summary>
    public static string FormatAttempt(IReadOnlyList<Operation> ops, long target)
    {
        var sb = new StringBuilder();
        sb.Append(ops[0].Left.ToString(CultureInfo.InvariantCulture));
        for (int i = 0; i < ops.Count; i++)
        {
            if (i > 0) sb.Append(',');
            var o = ops[i];
            sb.Append(CultureInfo.InvariantCulture, $" {o.Op} {o.Operand} = {o.Result}");
        }
        sb.Append(CultureInfo.InvariantCulture, $" {CompareWord} {target}, ").Append(ops[^1].Result == target ? SuccessWord : FailureWord).Append(TaskChatFormat.StepEnd);
        return sb.ToString();
    }

    /// <summary>The answer expression of an attempt, parenthesised left to right: <c>((9 * 7) + 3) + 2</c>.</summary>
    public static string FormatExpression(IReadOnlyList<Operation> ops)
    {
        var sb = new StringBuilder();
        sb.Append('(', ops.Count - 1).Append(ops[0].Left.ToString(CultureInfo.InvariantCulture));
        for (int i = 0; i < ops.Count; i++)
        {
            sb.Append(CultureInfo.InvariantCulture, $" {ops[i].Op} {ops[i].Operand}");
            if (i < ops.Count - 1) sb.Append(')');
        }
        return sb.ToString();
    }

    /// <summary>
    /// A random attempt: a random order of all the numbers, then for each next number a uniformly chosen operation that keeps
    /// the running value in 1..MaxValue with exact division. An attempt always uses every number and is checked once, at its end.
    /// </summary>
    private List<Operation> DrawAttempt(IReadOnlyList<long> numbers, SplitMix64 random)
    {
        var order = numbers.ToArray();
        for (int i = order.Length - 1; i > 0; i--)
        {
            int j = (int)random.NextInclusive(0, i);
            (order[i], order[j]) = (order[j], order[i]);
        }
        var ops = new List<Operation>(order.Length - 1);
        long value = order[0];
        Span<char> valid = stackalloc char[4];
        for (int i = 1; i < order.Length; i++)
        {
            int n = 0;
            foreach (var op in OperatorOrder)
                if (Apply(value, op, order[i]) is long r && r >= 1 && r <= Options.MaxValue) valid[n++] = op;
            // '+' or '-' always fits (numbers are below MaxValue), so n > 0.
            char chosen = valid[(int)random.NextInclusive(0, n - 1)];
            long result = Apply(value, chosen, order[i])!.Value;
            ops.Add(new Operation(value, chosen, order[i], result));
            value = result;
        }
        return ops;
    }

    /// <summary>One operation in exact integer arithmetic; null for a division with a remainder (or by zero) or an unknown operator.</summary>
    internal static long? Apply(long left, char op, long right) => op switch
    {
        '+' => left + right,
        '-' => left - right,
        '*' => left * right,
        '/' => right != 0 && left % right == 0 ? left / right : null,
        _ => null,
    };

    [GeneratedRegex(@"^Reach (?<target>\d+) with (?:(?<n>\d+)(?:, )?)+ using \+ - \* /, each number at most once\.$", RegexOptions.CultureInvariant)]
    private static partial Regex PromptPattern();
}
