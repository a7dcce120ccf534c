using System.Globalization;
using System.Text;

namespace MetaStone.Reasoning;

/// <summary>
/// A Countdown-style search problem as an expected answer: reach <see cref="Target"/> with <see cref="Numbers"/>
/// using + − × ÷, each number at most once. Written as <c>countdown:78:3,7,5,9</c> in the <c>answer</c> field of
/// JSONL datasets and sweeps, because a search problem has many right answers and the grader must check the
/// expression rather than compare it with one string.
/// </summary>
public sealed record CountdownSpec(long Target, IReadOnlyList<long> Numbers)
{
    public const string Prefix = "countdown:";

    /// <summary>The answer-field text: <c>countdown:TARGET:N1,N2,…</c>.</summary>
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{Prefix}{Target}:{string.Join(',', Numbers)}");

    /// <summary>Parses <c>countdown:TARGET:N1,N2,…</c>; null when <paramref name="text"/> is not such a spec.</summary>
    public static CountdownSpec? TryParse(string? text)
    {
        if (text is null || !text.StartsWith(Prefix, StringComparison.Ordinal))
            return null;
        var parts = text[Prefix.Length..].Split(':');
        if (parts.Length != 2 || !long.TryParse(parts[0], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var target))
            return null;
        var numbers = new List<long>();
        foreach (var item in parts[1].Split(','))
        {
            if (!long.TryParse(item.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var n))
                return null;
            numbers.Add(n);
        }
        return numbers.Count == 0 ? null : new CountdownSpec(target, numbers);
    }
}

/// <summary>Why an answer expression does or does not solve a <see cref="CountdownSpec"/>.</summary>
public enum CountdownVerdict
{
    Correct,
    /// <summary>Not a well-formed expression of integers, + - * / (also × ÷ −) and parentheses.</summary>
    Malformed,
    /// <summary>Uses a number that is not among the given ones, or uses one more often than it is given.</summary>
    NumberNotAvailable,
    /// <summary>A division leaves a remainder or divides by zero (only exact integer arithmetic counts).</summary>
    InexactDivision,
    /// <summary>Well formed and allowed, but its value is not the target.</summary>
    WrongValue,
}

/// <summary>
/// Checks a Countdown answer: the expression is parsed with the usual precedence (× ÷ before + −, left
/// associative, parentheses), evaluated in exact integer arithmetic where every division must leave no
/// remainder, every number must be one of the given ones and each given number is used at most as often
/// as it is given. Negative intermediate values are allowed; unary minus is not (it would create numbers).
/// </summary>
public static class CountdownGrader
{
    /// <summary>The verdict of one expression (the content of the answer box).</summary>
    public static CountdownVerdict Check(string expression, CountdownSpec spec)
    {
        ArgumentNullException.ThrowIfNull(expression);
        ArgumentNullException.ThrowIfNull(spec);
        var parser = new Parser(Normalize(expression));
        Value result;
        try
        {
            result = parser.ParseExpression();
            if (!parser.AtEnd) return CountdownVerdict.Malformed;
        }
        catch (FormatException) { return CountdownVerdict.Malformed; }
        catch (OverflowException) { return CountdownVerdict.Malformed; }
        if (result.Inexact) return CountdownVerdict.InexactDivision;
        var available = spec.Numbers.GroupBy(n => n).ToDictionary(g => g.Key, g => g.Count());
        foreach (var used in parser.Numbers)
        {
            if (!available.TryGetValue(used, out var left) || left == 0) return CountdownVerdict.NumberNotAvailable;
            available[used] = left - 1;
        }
        return result.Number == spec.Target ? CountdownVerdict.Correct : CountdownVerdict.WrongValue;
    }

    /// <summary>True when <paramref name="expression"/> reaches the target under the rules above.</summary>
    public static bool IsCorrect(string expression, CountdownSpec spec) => Check(expression, spec) == CountdownVerdict.Correct;

    private static string Normalize(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (var c in text)
            sb.Append(c switch { '×' or '·' => '*', '÷' => '/', '\u2212' => '-', _ => c });
        return sb.ToString();
    }

    /// <summary>An exact value, or the mark that some division on the way left a remainder.</summary>
    private readonly record struct Value(long Number, bool Inexact);

    /// <summary>Recursive-descent parser: expr = term (('+'|'-') term)*; term = factor (('*'|'/') factor)*; factor = int | '(' expr ')'.</summary>
    private sealed class Parser(string text)
    {
        private int _pos;
        private int _depth;
        public List<long> Numbers { get; } = [];
        public bool AtEnd { get { SkipSpaces(); return _pos == text.Length; } }

        public Value ParseExpression()
        {
            var left = ParseTerm();
            while (true)
            {
                SkipSpaces();
                if (_pos >= text.Length || (text[_pos] != '+' && text[_pos] != '-')) return left;
                char op = text[_pos++];
                var right = ParseTerm();
                left = new Value(checked(op == '+' ? left.Number + right.Number : left.Number - right.Number), left.Inexact || right.Inexact);
            }
        }

        private Value ParseTerm()
        {
            var left = ParseFactor();
            while (true)
            {
                SkipSpaces();
                if (_pos >= text.Length || (text[_pos] != '*' && text[_pos] != '/')) return left;
                char op = text[_pos++];
                var right = ParseFactor();
                if (op == '*')
                    left = new Value(checked(left.Number * right.Number), left.Inexact || right.Inexact);
                else if (right.Number == 0 || left.Number % right.Number != 0)
                    left = new Value(0, true);
                else
                    left = new Value(left.Number / right.Number, left.Inexact || right.Inexact);
            }
        }

        private Value ParseFactor()
        {
            SkipSpaces();
            if (_pos >= text.Length) throw new FormatException("expression ends early");
            if (text[_pos] == '(')
            {
                if (++_depth > 64) throw new FormatException("nested too deeply");
                _pos++;
                var inner = ParseExpression();
                SkipSpaces();
                if (_pos >= text.Length || text[_pos] != ')') throw new FormatException("missing ')'");
                _pos++;
                _depth--;
                return inner;
            }
            int start = _pos;
            while (_pos < text.Length && text[_pos] is >= '0' and <= '9') _pos++;
            if (_pos == start) throw new FormatException($"number expected at {start}");
            if (_pos - start > 12) throw new OverflowException();
            long n = long.Parse(text.AsSpan(start, _pos - start), NumberStyles.None, CultureInfo.InvariantCulture);
            Numbers.Add(n);
            return new Value(n, false);
        }

        private void SkipSpaces()
        {
            while (_pos < text.Length && char.IsWhiteSpace(text[_pos])) _pos++;
        }
    }
}
