namespace MetaStone.Model.Tokenization;

/// <summary>
/// GPT-2's byte ↔ printable-character table used by byte-level BPE vocabularies (space is 'Ġ', '\n' is 'Ċ').
/// </summary>
internal static class ByteLevelAlphabet
{
    private static readonly char[] CharByByte = BuildCharByByte();
    private static readonly Dictionary<char, byte> ByteByChar = BuildByteByChar();

    public static char ToChar(byte value) => CharByByte[value];

    /// <summary>
    /// Bytes of a vocabulary token. A token with a character outside the table falls back to its UTF-8 bytes,
    /// as the <c>tokenizers</c> ByteLevel decoder does.
    /// </summary>
    public static byte[] ToBytes(string token)
    {
        var bytes = new byte[token.Length];
        for (int i = 0; i < token.Length; i++)
        {
            if (!ByteByChar.TryGetValue(token[i], out bytes[i]))
                return System.Text.Encoding.UTF8.GetBytes(token);
        }
        return bytes;
    }

    // Printable Latin-1 bytes map to themselves; the other 68 bytes map to U+0100.. in byte order.
    private static char[] BuildCharByByte()
    {
        var table = new char[256];
        int next = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= '¡' and <= '¬' or >= '®' and <= 'ÿ';
            table[b] = printable ? (char)b : (char)(256 + next++);
        }
        return table;
    }

    private static Dictionary<char, byte> BuildByteByChar()
    {
        var map = new Dictionary<char, byte>(256);
        for (int b = 0; b < 256; b++)
            map[CharByByte[b]] = (byte)b;
        return map;
    }
}
