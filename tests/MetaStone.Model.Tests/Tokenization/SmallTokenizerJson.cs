using System.Text.Json;
using System.Text.Json.Nodes;

namespace MetaStone.Model.Tests.Tokenization;

/// <summary>
/// Writes minimal valid byte-level BPE tokenizer.json files: the 256 byte symbols (id = byte value), merges
/// ". Ċ" → ".Ċ", ".Ċ Ċ" → ".ĊĊ", "h i" → "hi", then the added tokens.
/// </summary>
internal static class SmallTokenizerJson
{
    public static readonly string[] ChatTokens = ["<|endoftext|>", "<think>", "</think>", "<|im_start|>", "<|im_end|>"];

    public const int DotNewline = 256, DotNewlineNewline = 257, Hi = 258, FirstAddedId = 259;

    public sealed record Options
    {
        public string[] AddedTokens { get; init; } = ChatTokens;
        public bool MergesAsArrays { get; init; }
        /// <summary>JSON of the pre_tokenizer, or null to omit it (QwenTokenizer then uses the Qwen regex).</summary>
        public string? PreTokenizerJson { get; init; } = QwenSequencePreTokenizer;
    }

    public const string QwenSequencePreTokenizer = """
        {"type":"Sequence","pretokenizers":[
          {"type":"Split","pattern":{"Regex":"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},
          {"type":"ByteLevel","add_prefix_space":false,"trim_offsets":false,"use_regex":false}]}
        """;

    /// <summary>GPT-2 byte → printable char table (same as the tokenizers library).</summary>
    public static char ByteChar(int b)
    {
        int next = 0;
        for (int i = 0; i < 256; i++)
        {
            bool printable = i is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            char c = printable ? (char)i : (char)(256 + next++);
            if (i == b)
                return c;
        }
        throw new ArgumentOutOfRangeException(nameof(b));
    }

    public static string Write(string directory, Options? options = null)
    {
        options ??= new Options();
        Directory.CreateDirectory(directory);
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++)
            vocab[ByteChar(b).ToString()] = b;
        vocab[".Ċ"] = DotNewline;
        vocab[".ĊĊ"] = DotNewlineNewline;
        vocab["hi"] = Hi;

        (string Left, string Right)[] merges = [(".", "Ċ"), (".Ċ", "Ċ"), ("h", "i")];
        var mergesNode = new JsonArray(merges.Select(m => options.MergesAsArrays
            ? (JsonNode)new JsonArray(m.Left, m.Right)
            : JsonValue.Create(m.Left + " " + m.Right)!).ToArray());

        var added = new JsonArray(options.AddedTokens.Select((content, i) => (JsonNode)new JsonObject
        {
            ["id"] = FirstAddedId + i,
            ["content"] = content,
            ["single_word"] = false,
            ["lstrip"] = false,
            ["rstrip"] = false,
            ["normalized"] = false,
            ["special"] = true,
        }).ToArray());

        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = added,
            ["normalizer"] = null,
            ["pre_tokenizer"] = options.PreTokenizerJson is null ? null : JsonNode.Parse(options.PreTokenizerJson),
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false },
            ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = mergesNode },
        };
        if (options.PreTokenizerJson is null)
            root.Remove("pre_tokenizer");

        string path = Path.Combine(directory, "tokenizer.json");
        File.WriteAllText(path, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return path;
    }

    public static void WriteConfig(string directory, string? chatTemplate, string? eosToken = null)
    {
        var config = new JsonObject();
        if (chatTemplate is not null)
            config["chat_template"] = chatTemplate;
        if (eosToken is not null)
            config["eos_token"] = eosToken;
        File.WriteAllText(Path.Combine(directory, "tokenizer_config.json"), config.ToJsonString());
    }
}

/// <summary>A fresh temporary directory removed after the test.</summary>
internal sealed class TempDirectory : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("metastone-tok-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); }
        catch (IOException) { /* best effort: a leaked temp folder must not fail the test */ }
    }
}
