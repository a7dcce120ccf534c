using System.Text;

namespace MetaStone.Training.Tasks;

/// <summary>
/// GPT-2's reversible byte→unicode mapping (<c>bytes_to_unicode</c>): printable Latin-1 bytes map to themselves,
/// the rest to U+0100 upwards, so space is <c>Ġ</c> and '\n' is <c>Ċ</c>. Byte-level BPE vocabularies are
/// written in this alphabet.
/// </summary>
public static class ByteLevelAlphabet
{
    /// <summary>The 256 byte characters in GPT-2 vocabulary order (printable bytes first); index = base token id.</summary>
    public static IReadOnlyList<char> CharsInVocabularyOrder { get; }

    private static readonly char[] ByteToChar = new char[256];

    static ByteLevelAlphabet()
    {
        var printable = new List<int>();
        printable.AddRange(Enumerable.Range('!', '~' - '!' + 1));
        printable.AddRange(Enumerable.Range('¡', '¬' - '¡' + 1));
        printable.AddRange(Enumerable.Range('®', 'ÿ' - '®' + 1));
        var printableSet = printable.ToHashSet();
        var order = new List<char>(256);
        foreach (var b in printable)
        {
            ByteToChar[b] = (char)b;
            order.Add((char)b);
        }
        var next = 256;
        for (var b = 0; b < 256; b++)
        {
            if (printableSet.Contains(b))
                continue;
            ByteToChar[b] = (char)next++;
            order.Add(ByteToChar[b]);
        }
        CharsInVocabularyOrder = order;
    }

    /// <summary>Maps a byte to its byte-level character.</summary>
    public static char CharOf(byte value) => ByteToChar[value];

    /// <summary>The byte-level form of a string's UTF-8 bytes, e.g. <c>".\n\n"</c> → <c>".ĊĊ"</c>.</summary>
    public static string Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var bytes = Encoding.UTF8.GetBytes(text);
        var chars = new char[bytes.Length];
        for (var i = 0; i < bytes.Length; i++)
            chars[i] = ByteToChar[bytes[i]];
        return new string(chars);
    }
}
