using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace MetaStone.Training.Tasks;

/// <summary>
/// Seeded generator of left-to-right arithmetic chains (<c>47 + 385 - 29 * 3</c>) and their step-by-step
/// reference solutions, the synthetic task the project's tiny policy and SPRM are trained on.
/// </summary>
public sealed partial class ArithmeticChainTask
{
    private const char Plus = '+', Minus = '-', Times = '*';
    private static readonly char[] Operators = [Plus, Minus, Times];

    /// <summary>Creates a generator; <paramref name="options"/> default to <see cref="ArithmeticTaskOptions"/>'s defaults.</summary>
    public ArithmeticChainTask(ArithmeticTaskOptions? options = null)
    {
        Options = options ?? new ArithmeticTaskOptions();
        Options.Validate();
    }

    public ArithmeticTaskOptions Options { get; }

    /// <summary>
    /// Yields <paramref name="count"/> distinct problems of <paramref name="split"/>, a pure function of
    /// (split, count, seed, options). A problem belongs to a split iff <see cref="TaskSplits.SplitOf"/> of its
    /// expression says so; candidates of other splits are drawn and discarded, so any two splits are disjoint
    /// whatever seeds they were generated with.
    /// </summary>
    public IEnumerable<ArithmeticProblem> Generate(string split, int count, int seed)
    {
        var splitIndex = TaskSplits.IndexOf(split);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        return GenerateIterator(split, splitIndex, count, seed);
    }

    private IEnumerable<ArithmeticProblem> GenerateIterator(string split, int splitIndex, int count, int seed)
    {
        var random = new SplitMix64(SplitMix64.Mix((ulong)(uint)seed, (ulong)splitIndex));
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var produced = 0;
        var draws = 0L;
        while (produced < count)
        {
            // The expression space is huge (> 10^10 chains), so this only trips on a bug or absurd options.
            if (++draws > 1000L * (count + 100))
                throw new InvalidOperationException($"Could not draw {count} distinct '{split}' problems; the options allow too few expressions.");
            var (start, ops) = DrawChain(random);
            var expression = ArithmeticProblem.FormatExpression(start, ops);
            if (TaskSplits.SplitOf(expression) != split || !seen.Add(expression))
                continue;
            var id = string.Create(CultureInfo.InvariantCulture, $"{split}-{seed}-{produced:D6}");
            yield return CreateProblem(id, start, ops);
            produced++;
        }
    }

    /// <summary>Builds a problem (prompt and answer) for a given chain.</summary>
    public static ArithmeticProblem CreateProblem(string id, long start, IReadOnlyList<ArithmeticOperation> ops)
    {
        ArgumentNullException.ThrowIfNull(ops);
        var answer = start;
        foreach (var op in ops)
            answer = op.ApplyTo(answer);
        return new ArithmeticProblem(id, PromptFor(ArithmeticProblem.FormatExpression(start, ops)), start, ops.ToArray(), answer);
    }

    /// <summary>The user message for an expression: <c>Compute 47 + 385 - 29 * 3 from left to right.</c></summary>
    public static string PromptFor(string canonicalExpression) => $"Compute {canonicalExpression} from left to right.";

    /// <summary>
    /// Parses a prompt written by <see cref="PromptFor"/> back into a problem (e.g. after a JSONL import), or
    /// returns null when the text is not such a prompt.
    /// </summary>
    public static ArithmeticProblem? TryParsePrompt(string id, string prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        var match = PromptPattern().Match(prompt);
        if (!match.Success)
            return null;
        var start = long.Parse(match.Groups["start"].Value, CultureInfo.InvariantCulture);
        var ops = new List<ArithmeticOperation>();
        var opCaptures = match.Groups["op"].Captures;
        var operandCaptures = match.Groups["operand"].Captures;
        for (var i = 0; i < opCaptures.Count; i++)
            ops.Add(new ArithmeticOperation(opCaptures[i].Value[0], long.Parse(operandCaptures[i].Value, CultureInfo.InvariantCulture)));
        return CreateProblem(id, start, ops);
    }

    /// <summary>
    /// The reference solution, exactly the assistant text the model is trained to produce after the chat prompt
    /// (which already ends in <c>&lt;think&gt;\n</c>, see <see cref="TaskChatFormat"/>):
    /// one step per operation, <c>"{left} {op} {operand} = {result}.\n\n"</c>, then <c>"&lt;/think&gt;\n\n\boxed{answer}"</c>.
    /// </summary>
    /// <remarks>
    /// Every step ends with <c>".\n\n"</c>, the SPRM step token (sprm-reference §2.1), and nothing else in the
    /// thinking part does. The text has no trailing newline: the trainer appends the end-of-turn token
    /// <c>&lt;|im_end|&gt;</c> right after the closing brace. Numbers are invariant integers; negative
    /// intermediate values are written with an ASCII '-' (<c>"-338 * 3 = -1014.\n\n"</c>).
    /// Example for <c>47 + 385 - 29 * 3</c>:
    /// <code>
    /// 47 + 385 = 432.\n\n432 - 29 = 403.\n\n403 * 3 = 1209.\n\n&lt;/think&gt;\n\n\boxed{1209}
    /// </code>
    /// </remarks>
    public static string Solution(ArithmeticProblem problem)
    {
        ArgumentNullException.ThrowIfNull(problem);
        var text = new StringBuilder();
        foreach (var step in Steps(problem))
            text.Append(step);
        text.Append(TaskChatFormat.ThinkClose).Append("\n\n").Append(@"\boxed{").Append(problem.AnswerText).Append('}');
        return text.ToString();
    }

    /// <summary>The thinking steps of <see cref="Solution"/>, each ending with <c>".\n\n"</c>.</summary>
    public static IReadOnlyList<string> Steps(ArithmeticProblem problem)
    {
        ArgumentNullException.ThrowIfNull(problem);
        var steps = new List<string>(problem.Ops.Count);
        var value = problem.Start;
        foreach (var op in problem.Ops)
        {
            var next = op.ApplyTo(value);
            steps.Add(string.Create(CultureInfo.InvariantCulture, $"{value} {op.Op} {op.Operand} = {next}{TaskChatFormat.StepEnd}"));
            value = next;
        }
        return steps;
    }

    private (long Start, ArithmeticOperation[] Ops) DrawChain(SplitMix64 random)
    {
        var o = Options;
        var opCount = (int)random.NextInclusive(o.MinOps, o.MaxOps);
        var start = random.NextInclusive(o.MinOperand, o.MaxOperand);
        var ops = new ArithmeticOperation[opCount];
        var value = start;
        for (var i = 0; i < opCount; i++)
        {
            // Re-draw operator and operand together until the running value stays in range; '+' or '-' always
            // fits (operands are smaller than the bound), so this terminates quickly.
            ArithmeticOperation op;
            long next;
            do
            {
                var symbol = Operators[random.NextInclusive(0, Operators.Length - 1)];
                var operand = symbol == Times
                    ? random.NextInclusive(o.MinMultiplier, o.MaxMultiplier)
                    : random.NextInclusive(o.MinOperand, o.MaxOperand);
                op = new ArithmeticOperation(symbol, operand);
                next = op.ApplyTo(value);
            }
            while (Math.Abs(next) >= o.MaxAbsValue);
            ops[i] = op;
            value = next;
        }
        return (start, ops);
    }

    [GeneratedRegex(@"^Compute (?<start>\d+)(?: (?<op>[-+*]) (?<operand>\d+))+ from left to right\.$", RegexOptions.CultureInvariant)]
    private static partial Regex PromptPattern();
}
