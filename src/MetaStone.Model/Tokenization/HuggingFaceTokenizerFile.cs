using System.Text.Json;

namespace MetaStone.Model.Tokenization;

/// <summary>One entry of tokenizer.json <c>added_tokens</c>.</summary>
/// <param name="IsSpecial">The file's own <c>special</c> flag: what Hugging Face's <c>skip_special_tokens</c> drops.</param>
internal sealed record AddedTokenEntry(string Content, int Id, bool IsSpecial);

/// <summary>
/// The parts of a Hugging Face <c>tokenizer.json</c> that a byte-level BPE tokenizer needs, read without
/// interpretation beyond validating the shapes we support.
/// </summary>
internal sealed class HuggingFaceTokenizerFile
{
    /// <summary>Qwen2/2.5/3 pre-tokenizer regex: the fallback when a file declares no pre-tokenizer.</summary>
    public const string QwenPreTokenizerPattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>GPT-2 regex that a <c>ByteLevel</c> pre-tokenizer applies when <c>use_regex</c> is true (its default).</summary>
    public const string Gpt2PreTokenizerPattern =
        @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    public required Dictionary<string, int> Vocabulary { get; init; }

    /// <summary>Merges in <c>"left right"</c> form, in rank order.</summary>
    public required List<string> Merges { get; init; }

    public required List<AddedTokenEntry> AddedTokens { get; init; }

    /// <summary>Split regexes applied one after another (each piece of one split is split again by the next).</summary>
    public required List<string> PreTokenizerPatterns { get; init; }

    public required bool AppliesNfc { get; init; }

    public static HuggingFaceTokenizerFile Read(string tokenizerJsonPath)
    {
        using var stream = File.OpenRead(tokenizerJsonPath);
        try
        {
            using var document = JsonDocument.Parse(stream, new JsonDocumentOptions { MaxDepth = 256 });
            return Parse(document.RootElement);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or KeyNotFoundException or FormatException)
        {
            throw new InvalidDataException($"{tokenizerJsonPath}: {e.Message}", e);
        }
    }

    /// <summary>
    /// Names of tokens that can be special markers: every added token plus vocabulary entries starting with '&lt;'.
    /// Cheaper than <see cref="Read"/> (no merges, no BPE) for callers that only ask "does the tokenizer have X".
    /// </summary>
    public static HashSet<string> ReadMarkerTokenNames(string tokenizerJsonPath)
    {
        using var stream = File.OpenRead(tokenizerJsonPath);
        using var document = JsonDocument.Parse(stream, new JsonDocumentOptions { MaxDepth = 256 });
        var root = document.RootElement;
        var names = new HashSet<string>(StringComparer.Ordinal);
        if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
        {
            foreach (var token in added.EnumerateArray())
            {
                if (token.TryGetProperty("content", out var content) && content.GetString() is { } text)
                    names.Add(text);
            }
        }
        if (root.TryGetProperty("model", out var model) && model.TryGetProperty("vocab", out var vocab) && vocab.ValueKind == JsonValueKind.Object)
        {
            foreach (var entry in vocab.EnumerateObject())
            {
                if (entry.Name.StartsWith('<'))
                    names.Add(entry.Name);
            }
        }
        return names;
    }

    private static HuggingFaceTokenizerFile Parse(JsonElement root)
    {
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new InvalidOperationException("no \"model\" object");
        string modelType = model.TryGetProperty("type", out var typeElement) ? typeElement.GetString() ?? "" : "BPE";
        if (modelType != "BPE")
            throw new NotSupportedException($"tokenizer model type '{modelType}' is not supported (only byte-level BPE)");

        var vocabulary = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var entry in model.GetProperty("vocab").EnumerateObject())
            vocabulary[entry.Name] = entry.Value.GetInt32();

        var merges = new List<string>();
        if (model.TryGetProperty("merges", out var mergesElement))
        {
            foreach (var merge in mergesElement.EnumerateArray())
                merges.Add(ReadMerge(merge));
        }

        var addedTokens = new List<AddedTokenEntry>();
        if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
        {
            foreach (var token in added.EnumerateArray())
            {
                bool isSpecial = token.TryGetProperty("special", out var special) && special.ValueKind == JsonValueKind.True;
                addedTokens.Add(new AddedTokenEntry(token.GetProperty("content").GetString()!, token.GetProperty("id").GetInt32(), isSpecial));
            }
        }

        var patterns = new List<string>();
        if (root.TryGetProperty("pre_tokenizer", out var preTokenizer) && preTokenizer.ValueKind == JsonValueKind.Object)
            CollectPreTokenizerPatterns(preTokenizer, patterns);
        else
            patterns.Add(QwenPreTokenizerPattern);

        return new HuggingFaceTokenizerFile
        {
            Vocabulary = vocabulary,
            Merges = merges,
            AddedTokens = addedTokens,
            PreTokenizerPatterns = patterns,
            AppliesNfc = root.TryGetProperty("normalizer", out var normalizer) && DeclaresNfc(normalizer),
        };
    }

    // Older `tokenizers` write "a b", newer ones ["a", "b"]; BpeOptions wants the string form.
    private static string ReadMerge(JsonElement merge)
    {
        if (merge.ValueKind == JsonValueKind.String)
            return merge.GetString()!;
        if (merge.ValueKind == JsonValueKind.Array && merge.GetArrayLength() == 2)
        {
            string left = merge[0].GetString()!, right = merge[1].GetString()!;
            // BpeOptions splits on the single space, so a space inside a symbol cannot be represented.
            if (left.Contains(' ') || right.Contains(' '))
                throw new NotSupportedException($"merge [\"{left}\", \"{right}\"] contains a space (not a byte-level BPE)");
            return left + " " + right;
        }
        throw new FormatException($"unexpected merge entry {merge.GetRawText()}");
    }

    private static void CollectPreTokenizerPatterns(JsonElement preTokenizer, List<string> patterns)
    {
        string type = preTokenizer.GetProperty("type").GetString() ?? "";
        switch (type)
        {
            case "Sequence":
                foreach (var inner in preTokenizer.GetProperty("pretokenizers").EnumerateArray())
                    CollectPreTokenizerPatterns(inner, patterns);
                break;
            case "Split":
                patterns.Add(ReadSplitPattern(preTokenizer));
                break;
            case "ByteLevel":
                if (preTokenizer.TryGetProperty("add_prefix_space", out var prefix) && prefix.ValueKind == JsonValueKind.True)
                    throw new NotSupportedException("ByteLevel pre-tokenizer with add_prefix_space=true is not supported");
                // use_regex defaults to true in `tokenizers`; Qwen files set it false because their Split already ran.
                bool usesRegex = !preTokenizer.TryGetProperty("use_regex", out var useRegex) || useRegex.ValueKind != JsonValueKind.False;
                if (usesRegex)
                    patterns.Add(Gpt2PreTokenizerPattern);
                break;
            default:
                throw new NotSupportedException($"pre-tokenizer type '{type}' is not supported (Sequence, Split, ByteLevel are)");
        }
    }

    private static string ReadSplitPattern(JsonElement split)
    {
        if (split.TryGetProperty("invert", out var invert) && invert.ValueKind == JsonValueKind.True)
            throw new NotSupportedException("Split pre-tokenizer with invert=true is not supported");
        string behavior = split.TryGetProperty("behavior", out var b) ? b.GetString() ?? "Isolated" : "Isolated";
        if (behavior != "Isolated")
            throw new NotSupportedException($"Split pre-tokenizer behavior '{behavior}' is not supported (only Isolated)");
        var pattern = split.GetProperty("pattern");
        if (pattern.TryGetProperty("Regex", out var regex))
            return regex.GetString()!;
        if (pattern.TryGetProperty("String", out var literal))
            return System.Text.RegularExpressions.Regex.Escape(literal.GetString()!);
        throw new FormatException($"unexpected Split pattern {pattern.GetRawText()}");
    }

    private static bool DeclaresNfc(JsonElement normalizer)
    {
        if (normalizer.ValueKind != JsonValueKind.Object)
            return false;
        string type = normalizer.TryGetProperty("type", out var t) ? t.GetString() ?? "" : "";
        if (type == "NFC")
            return true;
        if (type == "Sequence" && normalizer.TryGetProperty("normalizers", out var inner))
        {
            bool nfc = false;
            foreach (var n in inner.EnumerateArray())
            {
                if (DeclaresNfc(n))
                    nfc = true;
                else
                    throw new NotSupportedException($"normalizer {n.GetRawText()} is not supported (only NFC)");
            }
            return nfc;
        }
        throw new NotSupportedException($"normalizer type '{type}' is not supported (only NFC)");
    }
}
