using System.Globalization;
using System.Text;

namespace MetaStone.Model.Tokenization;

/// <summary>
/// Unicode NFC (canonical decomposition, canonical ordering, canonical composition) on our own tables.
/// </summary>
/// <remarks>
/// Why not <see cref="string.Normalize(NormalizationForm)"/>: the solution runs with InvariantGlobalization=true,
/// where it silently returns the input unchanged, so "e\u0301" would not become "é" as it does in the Rust/JS
/// tokenizers and the ids would differ. Tables come from UnicodeNfcData.g.cs (tests/tools/generate-nfc-data.py).
/// </remarks>
internal static class UnicodeNfc
{
    // Every code point below U+0300 is a starter that is NFC-stable and never the second half of a composition,
    // so text made only of them is already NFC (checked by the generator's data: the first mark is U+0300).
    private const char FirstCharNeedingWork = '\u0300';

    private const int HangulSBase = 0xAC00, HangulLBase = 0x1100, HangulVBase = 0x1161, HangulTBase = 0x11A7;
    private const int HangulLCount = 19, HangulVCount = 21, HangulTCount = 28;
    private const int HangulNCount = HangulVCount * HangulTCount, HangulSCount = HangulLCount * HangulNCount;

    private static readonly Lazy<Tables> Data = new(Tables.Load);

    public static string Normalize(string text)
    {
        if (!text.AsSpan().ContainsAnyExceptInRange('\0', (char)(FirstCharNeedingWork - 1)))
            return text;

        var tables = Data.Value;
        var codePoints = new List<int>(text.Length + 8);
        foreach (var rune in text.EnumerateRunes())
            Decompose(rune.Value, tables, codePoints);
        ReorderCombiningMarks(codePoints, tables);
        Compose(codePoints, tables);

        var builder = new StringBuilder(text.Length);
        foreach (int cp in codePoints)
            builder.Append(char.ConvertFromUtf32(cp));
        return builder.ToString();
    }

    private static void Decompose(int cp, Tables tables, List<int> output)
    {
        int sIndex = cp - HangulSBase;
        if (sIndex is >= 0 and < HangulSCount)
        {
            output.Add(HangulLBase + sIndex / HangulNCount);
            output.Add(HangulVBase + sIndex % HangulNCount / HangulTCount);
            if (sIndex % HangulTCount != 0)
                output.Add(HangulTBase + sIndex % HangulTCount);
            return;
        }
        if (tables.Decompositions.TryGetValue(cp, out var parts))
        {
            foreach (int part in parts)
                Decompose(part, tables, output);
            return;
        }
        output.Add(cp);
    }

    // Canonical ordering: within each run of non-starters, stable-sort by combining class (runs are short).
    private static void ReorderCombiningMarks(List<int> codePoints, Tables tables)
    {
        for (int i = 1; i < codePoints.Count; i++)
        {
            int cls = tables.CombiningClass(codePoints[i]);
            if (cls == 0)
                continue;
            for (int j = i; j > 0; j--)
            {
                int previousClass = tables.CombiningClass(codePoints[j - 1]);
                if (previousClass <= cls)
                    break;
                (codePoints[j - 1], codePoints[j]) = (codePoints[j], codePoints[j - 1]);
            }
        }
    }

    // Canonical composition (UAX #15 §1.3): combine each character with the last starter unless blocked.
    private static void Compose(List<int> codePoints, Tables tables)
    {
        if (codePoints.Count == 0)
            return;
        int starterIndex = tables.CombiningClass(codePoints[0]) == 0 ? 0 : -1;
        int lastClass = starterIndex == 0 ? 0 : 256;
        int write = 1;
        for (int read = 1; read < codePoints.Count; read++)
        {
            int cp = codePoints[read];
            int cls = tables.CombiningClass(cp);
            // Not blocked: nothing between the starter and cp, or everything between has a lower class.
            bool blocked = starterIndex < 0 || (lastClass != 0 && lastClass >= cls) || (lastClass == 0 && write - 1 != starterIndex);
            if (!blocked && TryCompose(codePoints[starterIndex], cp, tables, out int composite))
            {
                codePoints[starterIndex] = composite;
                continue;
            }
            if (cls == 0)
            {
                starterIndex = write;
                lastClass = 0;
            }
            else
            {
                lastClass = cls;
            }
            codePoints[write++] = cp;
        }
        codePoints.RemoveRange(write, codePoints.Count - write);
    }

    private static bool TryCompose(int first, int second, Tables tables, out int composite)
    {
        int lIndex = first - HangulLBase, vIndex = second - HangulVBase;
        if (lIndex is >= 0 and < HangulLCount && vIndex is >= 0 and < HangulVCount)
        {
            composite = HangulSBase + (lIndex * HangulVCount + vIndex) * HangulTCount;
            return true;
        }
        int sIndex = first - HangulSBase, tIndex = second - HangulTBase;
        if (sIndex is >= 0 and < HangulSCount && sIndex % HangulTCount == 0 && tIndex is > 0 and < HangulTCount)
        {
            composite = first + tIndex;
            return true;
        }
        return tables.Compositions.TryGetValue(((long)first << 21) | (uint)second, out composite);
    }

    private sealed class Tables
    {
        public required Dictionary<int, int[]> Decompositions { get; init; }
        public required Dictionary<long, int> Compositions { get; init; }
        public required Dictionary<int, int> CombiningClasses { get; init; }

        public int CombiningClass(int cp) => cp < FirstCharNeedingWork ? 0 : CombiningClasses.GetValueOrDefault(cp);

        public static Tables Load()
        {
            var decompositions = new Dictionary<int, int[]>();
            foreach (string entry in UnicodeNfcData.Decompositions.Split(';'))
            {
                var (cp, value) = SplitEntry(entry);
                decompositions[cp] = value.Split(',').Select(Hex).ToArray();
            }
            var compositions = new Dictionary<long, int>();
            foreach (string entry in UnicodeNfcData.PrimaryComposites.Split(';'))
            {
                int cp = Hex(entry);
                var parts = decompositions[cp];
                compositions[((long)parts[0] << 21) | (uint)parts[1]] = cp;
            }
            var classes = new Dictionary<int, int>();
            foreach (string entry in UnicodeNfcData.CombiningClasses.Split(';'))
            {
                var (cp, value) = SplitEntry(entry);
                classes[cp] = int.Parse(value, CultureInfo.InvariantCulture);
            }
            return new Tables { Decompositions = decompositions, Compositions = compositions, CombiningClasses = classes };
        }

        private static (int CodePoint, string Value) SplitEntry(string entry)
        {
            int colon = entry.IndexOf(':');
            return (Hex(entry[..colon]), entry[(colon + 1)..]);
        }

        private static int Hex(string text) => int.Parse(text, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
    }
}
