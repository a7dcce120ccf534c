using System.Text;

namespace MetaStone.Model.Tokenization;

/// <summary>
/// Turns generated ids into text as they arrive. A character whose UTF-8 bytes are spread over several tokens
/// (emoji, CJK, accented letters) is held back until its last byte arrives, so <see cref="Push"/> never returns
/// half a character or a spurious U+FFFD. The concatenation of all <see cref="Push"/> results and
/// <see cref="Flush"/> equals <see cref="QwenTokenizer.Decode"/> of the same ids.
/// Not thread-safe: one instance per generated sequence.
/// </summary>
public sealed class StreamingDecoder
{
    private readonly QwenTokenizer _tokenizer;
    private readonly bool _skipSpecialTokens;
    // A stateful UTF-8 decoder keeps an incomplete trailing sequence between calls and replaces truly invalid
    // bytes with U+FFFD exactly as Encoding.UTF8.GetString does for the whole sequence.
    private readonly Decoder _utf8 = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetDecoder();
    private char[] _chars = new char[64];

    internal StreamingDecoder(QwenTokenizer tokenizer, bool skipSpecialTokens)
    {
        _tokenizer = tokenizer;
        _skipSpecialTokens = skipSpecialTokens;
    }

    /// <summary>Adds one id and returns the text that became complete (possibly empty).</summary>
    public string Push(int id)
    {
        if (!_tokenizer.TryGetBytes(id, _skipSpecialTokens, out var bytes))
            return "";
        return DecodeBytes(bytes, flush: false);
    }

    /// <summary>Ends the sequence: returns held-back bytes (as U+FFFD if they never formed a character) and resets.</summary>
    public string Flush() => DecodeBytes([], flush: true);

    private string DecodeBytes(ReadOnlySpan<byte> bytes, bool flush)
    {
        // Each byte yields at most one char; held-back bytes (at most 3) may flush as one U+FFFD each.
        int maxChars = bytes.Length + 4;
        if (_chars.Length < maxChars)
            _chars = new char[Math.Max(maxChars, _chars.Length * 2)];
        int count = _utf8.GetChars(bytes, _chars, flush);
        return new string(_chars, 0, count);
    }
}
