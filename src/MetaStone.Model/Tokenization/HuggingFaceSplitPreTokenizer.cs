using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace MetaStone.Model.Tokenization;

/// <summary>
/// Pre-tokenizer that reproduces Hugging Face <c>tokenizers</c>: added tokens are cut out first (longest match
/// wins), then each remaining segment goes through the file's Split regexes with "Isolated" behaviour.
/// </summary>
/// <remarks>
/// Why not <see cref="RegexPreTokenizer"/>: it (a) drops text the regex does not match, where Isolated keeps it as
/// its own piece; (b) matches special tokens in dictionary order rather than longest first; and (c) runs the regex
/// on UTF-16, where a supplementary-plane letter (CJK Ext. B, math italic 𝑥) is two surrogates of category Cs, so
/// <c>\p{L}</c> misses it and the pieces differ from the Rust/JS tokenizers, which match code points. We fix (c) by
/// running the regex on a copy where every supplementary code point is replaced by one BMP stand-in of the same
/// Unicode category, then mapping the match offsets back.
/// </remarks>
internal sealed class HuggingFaceSplitPreTokenizer : PreTokenizer
{
    private readonly Regex? _addedTokensRegex;
    private readonly Regex[] _splitRegexes;

    /// <summary>Longest one Split-regex match may take: a catastrophic pattern from a tokenizer.json (e.g. <c>(a+)+b</c>)
    /// otherwise hangs generation instead of failing.</summary>
    public static readonly TimeSpan MatchTimeout = TimeSpan.FromSeconds(2);

    public HuggingFaceSplitPreTokenizer(IEnumerable<string> splitPatterns, IEnumerable<string> addedTokens)
    {
        _splitRegexes = splitPatterns.Select(p => new Regex(p, RegexOptions.Compiled | RegexOptions.CultureInvariant, MatchTimeout)).ToArray();
        var tokens = addedTokens.Where(t => t.Length > 0).Distinct(StringComparer.Ordinal)
            .OrderByDescending(t => t.Length).ThenBy(t => t, StringComparer.Ordinal).ToArray();
        if (tokens.Length > 0)
            _addedTokensRegex = new Regex(string.Join("|", tokens.Select(Regex.Escape)), RegexOptions.Compiled | RegexOptions.CultureInvariant);
    }

    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text) =>
        string.IsNullOrEmpty(text) ? [] : Split(text);

    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) =>
        text.IsEmpty ? [] : Split(text.ToString());

    private List<(int Offset, int Length)> Split(string text)
    {
        try { return SplitUnchecked(text); }
        catch (RegexMatchTimeoutException e)
        {
            throw new ArgumentException($"the tokenizer's Split pattern '{e.Pattern}' took longer than {MatchTimeout.TotalSeconds:0} s on a text of {text.Length} characters " +
                "(catastrophic backtracking in tokenizer.json's pre_tokenizer): fix the pattern", e);
        }
    }

    private List<(int Offset, int Length)> SplitUnchecked(string text)
    {
        var pieces = new List<(int Offset, int Length)>();
        int segmentStart = 0;
        if (_addedTokensRegex is not null)
        {
            for (var added = _addedTokensRegex.Match(text); added.Success; added = added.NextMatch())
            {
                SplitSegment(text, segmentStart, added.Index - segmentStart, 0, pieces);
                pieces.Add((added.Index, added.Length));
                segmentStart = added.Index + added.Length;
            }
        }
        SplitSegment(text, segmentStart, text.Length - segmentStart, 0, pieces);
        return pieces;
    }

    /// <summary>Splits text[start..start+length) with regex number <paramref name="level"/> and recurses into the next.</summary>
    private void SplitSegment(string text, int start, int length, int level, List<(int Offset, int Length)> pieces)
    {
        if (length == 0)
            return;
        if (level == _splitRegexes.Length)
        {
            pieces.Add((start, length));
            return;
        }

        // Each segment is matched on its own (a substring), as `tokenizers` does: look-arounds such as \s+(?!\S)
        // must not see past the end of the segment.
        string segment = text.Substring(start, length);
        var (matchable, toOriginal) = ReplaceSupplementaryCodePoints(segment);
        int covered = 0;
        for (var match = _splitRegexes[level].Match(matchable); match.Success; match = match.NextMatch())
        {
            if (match.Length == 0)
                continue;
            int matchStart = toOriginal?[match.Index] ?? match.Index;
            int matchEnd = toOriginal?[match.Index + match.Length] ?? match.Index + match.Length;
            // Isolated: the unmatched gap before a match is a piece of its own.
            SplitSegment(text, start + covered, matchStart - covered, level + 1, pieces);
            SplitSegment(text, start + matchStart, matchEnd - matchStart, level + 1, pieces);
            covered = matchEnd;
        }
        SplitSegment(text, start + covered, length - covered, level + 1, pieces);
    }

    /// <summary>
    /// Returns the text with each surrogate pair replaced by one BMP character of the same Unicode category, and a
    /// map from indices in that text (0..Length inclusive) to indices in the original; null map when nothing changed.
    /// </summary>
    private static (string Text, int[]? ToOriginal) ReplaceSupplementaryCodePoints(string text)
    {
        int firstSurrogate = text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF');
        if (firstSurrogate < 0)
            return (text, null);

        var builder = new StringBuilder(text.Length);
        var toOriginal = new List<int>(text.Length + 1);
        for (int i = 0; i < text.Length;)
        {
            toOriginal.Add(i);
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                var rune = new Rune(text[i], text[i + 1]);
                builder.Append(StandInFor(Rune.GetUnicodeCategory(rune)));
                i += 2;
            }
            else
            {
                builder.Append(text[i]);
                i++;
            }
        }
        toOriginal.Add(text.Length);
        return (builder.ToString(), toOriginal.ToArray());
    }

    // Stand-ins are BMP characters of the same category that no ASCII literal in a tokenizer regex can match
    // (letters other than s/t/r/e/v/m/l/d so the (?i:'s|'t|...) contractions never fire on them).
    private static char StandInFor(UnicodeCategory category) => category switch
    {
        UnicodeCategory.UppercaseLetter => '\u0416', // Ж
        UnicodeCategory.LowercaseLetter => '\u0436', // ж
        UnicodeCategory.TitlecaseLetter => '\u01C5', // ǅ
        UnicodeCategory.ModifierLetter => '\u02B0', // ʰ
        UnicodeCategory.OtherLetter => '\u4E00', // 一
        UnicodeCategory.DecimalDigitNumber => '\u0660', // ٠
        UnicodeCategory.LetterNumber => '\u2160', // Ⅰ
        UnicodeCategory.OtherNumber => '\u00B2', // ²
        UnicodeCategory.NonSpacingMark => '\u0300',
        UnicodeCategory.SpacingCombiningMark => '\u0903',
        UnicodeCategory.EnclosingMark => '\u20DD',
        UnicodeCategory.ConnectorPunctuation => '\u203F', // ‿
        UnicodeCategory.DashPunctuation => '\u2010', // ‐
        UnicodeCategory.OpenPunctuation => '\u2045', // ⁅
        UnicodeCategory.ClosePunctuation => '\u2046', // ⁆
        UnicodeCategory.InitialQuotePunctuation => '\u00AB', // «
        UnicodeCategory.FinalQuotePunctuation => '\u00BB', // »
        UnicodeCategory.OtherPunctuation => '\u00A1', // ¡
        UnicodeCategory.MathSymbol => '\u00B1', // ±
        UnicodeCategory.CurrencySymbol => '\u00A2', // ¢
        UnicodeCategory.ModifierSymbol => '\u00B4', // ´
        UnicodeCategory.OtherSymbol => '\u00A9', // ©
        UnicodeCategory.Format => '\u2060', // word joiner
        UnicodeCategory.PrivateUse => '\uE000',
        _ => '\u0378', // unassigned in the BMP
    };
}
