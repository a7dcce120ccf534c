using System.Text.Json;

namespace MetaStone.Bench.Peer;

/// <summary>llama.cpp's token types (<c>llama_token_type</c>, GGUF <c>tokenizer.ggml.token_type</c>).</summary>
public enum GgufTokenType
{
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

/// <summary>
/// A Hugging Face byte-level BPE tokenizer.json as GGUF's <c>tokenizer.ggml.*</c> arrays, the way llama.cpp's
/// convert_hf_to_gguf.py writes a Qwen2 ("gpt2" model, "qwen2" pre-tokenizer): one token string per id up to the model's
/// vocabulary size (ids the tokenizer does not define become <c>[PAD{id}]</c>, type unused), added tokens marked special
/// as control tokens and the other added tokens as user-defined, and the merges as "left right" strings.
/// </summary>
public sealed record GgufVocabulary(IReadOnlyList<string> Tokens, IReadOnlyList<int> TokenTypes, IReadOnlyList<string> Merges)
{
    public static GgufVocabulary FromTokenizerJson(string tokenizerJsonPath, int vocabularySize)
    {
        using var stream = File.OpenRead(tokenizerJsonPath);
        using var document = JsonDocument.Parse(stream);
        var root = document.RootElement;
        var model = root.GetProperty("model");
        if (model.GetProperty("type").GetString() != "BPE")
            throw new InvalidDataException($"{tokenizerJsonPath}: model.type is {model.GetProperty("type")}, expected BPE");

        var tokens = new string?[vocabularySize];
        var types = new int[vocabularySize];
        void Set(int id, string token, GgufTokenType type)
        {
            if (id < 0 || id >= vocabularySize)
                throw new InvalidDataException($"{tokenizerJsonPath}: token id {id} ('{token}') is outside the model's vocabulary of {vocabularySize}");
            tokens[id] = token;
            types[id] = (int)type;
        }
        foreach (var entry in model.GetProperty("vocab").EnumerateObject())
            Set(entry.Value.GetInt32(), entry.Name, GgufTokenType.Normal);
        if (root.TryGetProperty("added_tokens", out var added))
        {
            foreach (var token in added.EnumerateArray())
            {
                bool special = token.TryGetProperty("special", out var s) && s.GetBoolean();
                Set(token.GetProperty("id").GetInt32(), token.GetProperty("content").GetString()!, special ? GgufTokenType.Control : GgufTokenType.UserDefined);
            }
        }
        for (int id = 0; id < vocabularySize; id++)
        {
            if (tokens[id] is not null) continue;
            tokens[id] = $"[PAD{id}]";
            types[id] = (int)GgufTokenType.Unused;
        }

        // Merges are "a b" strings in older tokenizer.json files and ["a", "b"] pairs in newer ones; GGUF wants the string form.
        var merges = new List<string>();
        foreach (var merge in model.GetProperty("merges").EnumerateArray())
        {
            merges.Add(merge.ValueKind switch
            {
                JsonValueKind.String => merge.GetString()!,
                JsonValueKind.Array when merge.GetArrayLength() == 2 => $"{merge[0].GetString()} {merge[1].GetString()}",
                _ => throw new InvalidDataException($"{tokenizerJsonPath}: a merge is neither \"a b\" nor [\"a\", \"b\"]: {merge}"),
            });
        }
        return new GgufVocabulary(tokens!, types, merges);
    }

    /// <summary>Id of a token string (an added token such as <c>&lt;|im_end|&gt;</c>), or null.</summary>
    public int? IdOf(string token)
    {
        for (int i = Tokens.Count - 1; i >= 0; i--) // added tokens sit at the end
            if (Tokens[i] == token) return i;
        return null;
    }
}
