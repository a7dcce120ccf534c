using System.Globalization;
using System.Text;

namespace MetaStone.Training.Tasks;

/// <summary>One left-to-right operation of a chain: the operator ('+', '-' or '*') and its non-negative operand.</summary>
public readonly record struct ArithmeticOperation(char Op, long Operand)
{
    /// <summary>Applies this operation to the running value.</summary>
    public long ApplyTo(long value) => Op switch
    {
        '+' => value + Operand,
        '-' => value - Operand,
        '*' => value * Operand,
        _ => throw new InvalidOperationException($"Unknown operator '{Op}'."),
    };
}

/// <summary>
/// A chain problem such as <c>47 + 385 - 29 * 3</c>, evaluated strictly from left to right
/// (so the example is ((47 + 385) - 29) * 3 = 1209, not 47 + 385 - 87).
/// </summary>
/// <param name="Id">Stable identifier, e.g. <c>train-7-000012</c>.</param>
/// <param name="Prompt">The user message, see <see cref="ArithmeticChainTask.PromptFor"/>.</param>
/// <param name="Start">The first number of the chain.</param>
/// <param name="Ops">The operations, applied in order.</param>
/// <param name="Answer">The left-to-right value of the chain.</param>
public sealed record ArithmeticProblem(string Id, string Prompt, long Start, IReadOnlyList<ArithmeticOperation> Ops, long Answer)
{
    /// <summary>
    /// The canonical expression text (<c>"47 + 385 - 29 * 3"</c>): single spaces, ASCII operators, invariant digits.
    /// It decides the split, so two problems with the same expression always land in the same split.
    /// </summary>
    public string Expression => FormatExpression(Start, Ops);

    /// <summary>The answer as the evaluation scripts store it (invariant integer text).</summary>
    public string AnswerText => Answer.ToString(CultureInfo.InvariantCulture);

    /// <summary>Formats a chain the canonical way.</summary>
    public static string FormatExpression(long start, IReadOnlyList<ArithmeticOperation> ops)
    {
        var text = new StringBuilder(start.ToString(CultureInfo.InvariantCulture));
        foreach (var op in ops)
            text.Append(' ').Append(op.Op).Append(' ').Append(op.Operand.ToString(CultureInfo.InvariantCulture));
        return text.ToString();
    }
}
