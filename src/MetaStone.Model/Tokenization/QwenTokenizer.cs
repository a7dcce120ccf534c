using System.Collections.Frozen;
using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace MetaStone.Model.Tokenization;

/// <summary>
/// Byte-level BPE tokenizer loaded from a Hugging Face <c>tokenizer.json</c> (Qwen2/2.5/3, DeepSeek-R1-Distill-Qwen,
/// or a small project-built file). Ids match the Hugging Face / transformers.js tokenizers exactly.
/// </summary>
/// <remarks>
/// Encoding runs on Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/> with our own pre-tokenizer
/// (<see cref="HuggingFaceSplitPreTokenizer"/>). Decoding is done here from the byte-level table, because the
/// streaming decoder needs the raw bytes of each token anyway and both must agree byte for byte.
/// Encode never adds BOS/EOS: chat templates write them as text.
/// Thread-safe after construction.
/// </remarks>
public sealed class QwenTokenizer
{
    private readonly BpeTokenizer _bpe;
    private readonly FrozenDictionary<string, int> _specialTokens;
    private readonly FrozenSet<int> _specialIds;
    // Added tokens whose tokenizer.json entry says "special": true; only these are dropped by skipSpecialTokens,
    // as in Hugging Face (so Qwen3's <think>, marked non-special there, survives skip_special_tokens).
    private readonly FrozenSet<int> _skippableIds;
    // Every id's bytes back to back, and where each id's run starts (id i is [_byteStarts[i], _byteStarts[i + 1]); an id
    // with no token has an empty run and _hasBytes false): ~1 MB for Qwen's 151k tokens where one byte[] per id took
    // 8.8 MB of managed heap, all of it resident for the process's life.
    private readonly byte[] _tokenBytes;
    private readonly int[] _byteStarts;
    private readonly bool[] _hasBytes;

    private QwenTokenizer(HuggingFaceTokenizerFile file, string? eosToken)
    {
        var special = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var added in file.AddedTokens)
            special[added.Content] = added.Id;
        _specialTokens = special.ToFrozenDictionary(StringComparer.Ordinal);
        _specialIds = special.Values.ToFrozenSet();
        _skippableIds = file.AddedTokens.Where(t => t.IsSpecial).Select(t => t.Id).ToFrozenSet();

        // All added tokens go to the BPE as special tokens (and to the pre-tokenizer, which cuts them out first):
        // otherwise <think> or <|im_start|> would be split into bytes.
        _bpe = BpeTokenizer.Create(new BpeOptions(file.Vocabulary)
        {
            Merges = file.Merges,
            ByteLevel = true,
            SpecialTokens = _specialTokens,
            PreTokenizer = new HuggingFaceSplitPreTokenizer(file.PreTokenizerPatterns, _specialTokens.Keys),
            Normalizer = file.AppliesNfc ? new NfcNormalizer() : null,
        });

        int maxId = -1;
        foreach (int id in file.Vocabulary.Values.Concat(special.Values))
            maxId = Math.Max(maxId, id);
        VocabSize = maxId + 1;

        var bytesById = new byte[]?[VocabSize];
        foreach (var (token, id) in file.Vocabulary)
            bytesById[id] = ByteLevelAlphabet.ToBytes(token);
        // Added tokens decode to their literal text (what the tokenizers' ByteLevel decoder emits for them).
        foreach (var (token, id) in special)
            bytesById[id] = Encoding.UTF8.GetBytes(token);
        _byteStarts = new int[VocabSize + 1];
        _hasBytes = new bool[VocabSize];
        for (int id = 0; id < VocabSize; id++)
        {
            _hasBytes[id] = bytesById[id] is not null;
            _byteStarts[id + 1] = _byteStarts[id] + (bytesById[id]?.Length ?? 0);
        }
        _tokenBytes = new byte[_byteStarts[VocabSize]];
        for (int id = 0; id < VocabSize; id++)
            bytesById[id]?.CopyTo(_tokenBytes, _byteStarts[id]);

        StepTokenIds = Encode(".\n\n");
        EosTokenId = eosToken is null ? null : GetTokenId(eosToken);
    }

    /// <summary>Loads a tokenizer.json alone (no tokenizer_config.json, so <see cref="EosTokenId"/> is null).</summary>
    public static QwenTokenizer FromFile(string tokenizerJsonPath)
    {
        if (!File.Exists(tokenizerJsonPath))
            throw new FileNotFoundException($"tokenizer.json not found: {tokenizerJsonPath}", tokenizerJsonPath);
        return new QwenTokenizer(HuggingFaceTokenizerFile.Read(tokenizerJsonPath), eosToken: null);
    }

    /// <summary>Loads <c>modelDir/tokenizer.json</c> and, when present, <c>modelDir/tokenizer_config.json</c> (for the EOS token).</summary>
    public static QwenTokenizer FromDirectory(string modelDir)
    {
        string tokenizerJson = Path.Combine(modelDir, "tokenizer.json");
        if (!File.Exists(tokenizerJson))
            throw new FileNotFoundException($"tokenizer.json not found in model directory {modelDir}", tokenizerJson);
        string configPath = Path.Combine(modelDir, "tokenizer_config.json");
        string? eosToken = File.Exists(configPath) ? ReadEosToken(configPath) : null;
        return new QwenTokenizer(HuggingFaceTokenizerFile.Read(tokenizerJson), eosToken);
    }

    /// <summary>Highest token id + 1 over the BPE vocabulary and the added tokens (not the model's padded embedding size).</summary>
    public int VocabSize { get; }

    /// <summary>All <c>added_tokens</c> of the file (content → id). They are never split by <see cref="Encode"/>.</summary>
    public IReadOnlyDictionary<string, int> SpecialTokens => _specialTokens;

    /// <summary>Id of tokenizer_config.json's <c>eos_token</c>; null when there is no config or it names none.</summary>
    public int? EosTokenId { get; }

    /// <summary>Ids of <c>Encode(".\n\n")</c>: the SPRM step token (a single id, 382, for Qwen vocabularies).</summary>
    public int[] StepTokenIds { get; }

    /// <summary>Encodes text; added tokens written in the text (e.g. <c>&lt;think&gt;</c>) become their single ids.</summary>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return text.Length == 0 ? [] : [.. _bpe.EncodeToIds(text)];
    }

    /// <summary>
    /// Decodes ids to text. Invalid UTF-8 (e.g. half of a multi-byte character) becomes U+FFFD. Ids outside the
    /// vocabulary decode to nothing, as in Hugging Face.
    /// </summary>
    /// <param name="skipSpecialTokens">Drop added tokens marked <c>"special": true</c> in tokenizer.json
    /// (Hugging Face <c>skip_special_tokens</c> semantics).</param>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            if (TryGetBytes(id, skipSpecialTokens, out var tokenBytes))
                bytes.AddRange(tokenBytes);
        }
        return Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes));
    }

    /// <summary>Creates a decoder that turns ids into text one at a time without splitting multi-byte characters.</summary>
    public StreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = false) => new(this, skipSpecialTokens);

    /// <summary>The SPRM step rules of this vocabulary: the <c>.\n\n</c> ids and the thinking tags (sprm-reference §2.1–2.3).</summary>
    public MetaStone.Reasoning.StepTokenSet StepRules() =>
        new(StepTokenIds.ToHashSet(), TryGetTokenId("<think>"), TryGetTokenId("</think>"));

    /// <summary>Id of a token given as it is stored in tokenizer.json (byte-level form such as "Ġworld", or an added token such as "&lt;think&gt;").</summary>
    public int? TryGetTokenId(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        // The BPE's own vocabulary (built on first use, 4.4 MB) instead of a second dictionary of ours (10.9 MB, resident
        // from load): besides the added tokens, only callers asking for ordinary tokens need it.
        if (_specialTokens.TryGetValue(token, out int id) || _bpe.Vocabulary.TryGetValue(token, out id))
            return id;
        return null;
    }

    /// <summary>Like <see cref="TryGetTokenId"/> but throws when the tokenizer has no such token.</summary>
    public int GetTokenId(string token) =>
        TryGetTokenId(token) ?? throw new KeyNotFoundException($"Token '{token}' is not in the tokenizer's vocabulary or added tokens.");

    /// <summary>True for ids of added tokens (<see cref="SpecialTokens"/>).</summary>
    public bool IsSpecial(int id) => _specialIds.Contains(id);

    internal bool TryGetBytes(int id, bool skipSpecialTokens, out ReadOnlySpan<byte> bytes)
    {
        if ((uint)id >= (uint)_hasBytes.Length || !_hasBytes[id] || (skipSpecialTokens && _skippableIds.Contains(id)))
        {
            bytes = [];
            return false;
        }
        bytes = _tokenBytes.AsSpan(_byteStarts[id], _byteStarts[id + 1] - _byteStarts[id]);
        return true;
    }

    private static string? ReadEosToken(string configPath)
    {
        using var stream = File.OpenRead(configPath);
        using var document = JsonDocument.Parse(stream);
        if (!document.RootElement.TryGetProperty("eos_token", out var eos))
            return null;
        // Either a plain string or a serialized AddedToken object {"content": ...}.
        return eos.ValueKind switch
        {
            JsonValueKind.String => eos.GetString(),
            JsonValueKind.Object when eos.TryGetProperty("content", out var content) => content.GetString(),
            _ => null,
        };
    }

    /// <summary>Qwen2's tokenizer normalizes input to NFC; tokenizer.json declares it as <c>{"type": "NFC"}</c>.</summary>
    private sealed class NfcNormalizer : Normalizer
    {
        public override string Normalize(string original) => UnicodeNfc.Normalize(original);

        public override string Normalize(ReadOnlySpan<char> original) => UnicodeNfc.Normalize(original.ToString());
    }
}
