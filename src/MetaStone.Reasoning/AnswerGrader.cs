using System.Globalization;
using System.Numerics;
using System.Text;
using System.Text.RegularExpressions;

namespace MetaStone.Reasoning;

/// <summary>
/// Grades a model's final answer against an expected answer, the way the reference math evaluation does:
/// take the last <c>\boxed{...}</c> of the answer part and compare it after normalization.
/// </summary>
public static partial class AnswerGrader
{
    private const string BoxedOpening = @"\boxed{";
    private const string ThinkClose = "</think>";

    /// <summary>
    /// Returns the content of the last <c>\boxed{...}</c> in <paramref name="text"/> whose braces balance
    /// (nested braces are kept verbatim), or null when there is none. An empty box yields "".
    /// </summary>
    /// <remarks>
    /// "Last" means the last opening position, like the reference <c>last_boxed_only_string</c>. A truncated
    /// final box (generation cut off before the closing brace) does not count, so an earlier complete box wins.
    /// </remarks>
    public static string? ExtractBoxed(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var searchEnd = text.Length;
        while (searchEnd > 0)
        {
            var start = text.LastIndexOf(BoxedOpening, searchEnd - 1, searchEnd, StringComparison.Ordinal);
            if (start < 0)
                return null;
            var contentStart = start + BoxedOpening.Length;
            var depth = 1;
            for (var i = contentStart; i < text.Length; i++)
            {
                if (text[i] == '{')
                    depth++;
                else if (text[i] == '}' && --depth == 0)
                    return text[contentStart..i];
            }
            searchEnd = start;
        }
        return null;
    }

    /// <summary>
    /// Returns the part of a model output that carries the final answer: the text after the last
    /// <c>&lt;/think&gt;</c>, or the whole output when there is no such tag.
    /// </summary>
    /// <remarks>A box written only while thinking is a draft, not an answer, so it must not be graded.</remarks>
    public static string AnswerPart(string modelOutput)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        var close = modelOutput.LastIndexOf(ThinkClose, StringComparison.Ordinal);
        return close < 0 ? modelOutput : modelOutput[(close + ThinkClose.Length)..];
    }

    /// <summary>
    /// True when the last box of the answer part (see <see cref="AnswerPart"/>) equals
    /// <paramref name="expectedAnswer"/> after <see cref="Normalize"/>; numbers compare by value. When the expected
    /// answer is a <see cref="CountdownSpec"/> (<c>countdown:78:3,7,5,9</c>) the box must hold an expression that
    /// <see cref="CountdownGrader"/> accepts instead.
    /// </summary>
    public static bool IsCorrect(string modelOutput, string expectedAnswer)
    {
        ArgumentNullException.ThrowIfNull(expectedAnswer);
        var extracted = ExtractBoxed(AnswerPart(modelOutput));
        if (extracted is null)
            return false;
        // A search problem has many right answers: its expected answer is the problem itself, and the expression is checked.
        if (CountdownSpec.TryParse(expectedAnswer) is { } countdown)
            return CountdownGrader.IsCorrect(extracted, countdown);
        var actual = Normalize(extracted);
        var expected = Normalize(expectedAnswer);
        if (actual.Length == 0 || expected.Length == 0)
            return false;
        if (PlainNumber().IsMatch(actual) && PlainNumber().IsMatch(expected))
            return NumbersEqual(actual, expected);
        return string.Equals(actual, expected, StringComparison.Ordinal);
    }

    /// <summary>
    /// Canonical answer text: whitespace removed (inside too), unicode minus (U+2212) as '-', thousands
    /// separators of a well-formed grouped number removed ("1,234" → "1234"), a leading '+' dropped.
    /// </summary>
    /// <remarks>Commas are only removed in a grouped number so that a tuple answer such as "1,2" stays a tuple.</remarks>
    public static string Normalize(string answer)
    {
        ArgumentNullException.ThrowIfNull(answer);
        var compact = new StringBuilder(answer.Length);
        foreach (var c in answer)
        {
            if (char.IsWhiteSpace(c))
                continue;
            compact.Append(c == '\u2212' ? '-' : c);
        }
        var text = compact.ToString();
        if (GroupedNumber().IsMatch(text))
            text = text.Replace(",", "", StringComparison.Ordinal);
        if (text.StartsWith('+'))
            text = text[1..];
        return text;
    }

    /// <summary>Compares two plain numbers by value, so "-0" equals "0" and "042" equals "42".</summary>
    private static bool NumbersEqual(string left, string right)
    {
        const NumberStyles Styles = NumberStyles.AllowLeadingSign | NumberStyles.AllowDecimalPoint;
        if (decimal.TryParse(left, Styles, CultureInfo.InvariantCulture, out var leftValue)
            && decimal.TryParse(right, Styles, CultureInfo.InvariantCulture, out var rightValue))
            return leftValue == rightValue;
        // Beyond decimal's range only integers are worth comparing exactly.
        return BigInteger.TryParse(left, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var leftBig)
            && BigInteger.TryParse(right, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var rightBig)
            && leftBig == rightBig;
    }

    [GeneratedRegex(@"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$", RegexOptions.CultureInvariant)]
    private static partial Regex GroupedNumber();

    [GeneratedRegex(@"^-?(\d+(\.\d*)?|\.\d+)$", RegexOptions.CultureInvariant)]
    private static partial Regex PlainNumber();
}
