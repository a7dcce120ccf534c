using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace MetaStone.Training.Tasks;

/// <summary>
/// Trains a small byte-level BPE for the arithmetic task and writes it as Hugging Face <c>tokenizer.json</c> and
/// <c>tokenizer_config.json</c> in the Qwen2 layout (same pre-tokenizer regex, byte-level model and decoder), so
/// the task model loads through the same tokenizer path as a real Qwen2 checkpoint.
/// </summary>
/// <remarks>
/// Digits stay single tokens because the Qwen pre-tokenizer isolates every <c>\p{N}</c>; the learned merges
/// therefore only cover words, operators with their leading space, and newline runs, and training usually stops
/// (no pair seen twice) well below the target size. <c>".\n\n"</c> is forced to one token by putting its merges
/// first, as in the Qwen vocabulary, because the SPRM finds steps by that token's id.
/// </remarks>
public sealed class TaskTokenizerBuilder
{
    /// <summary>The Qwen2 pre-tokenizer regex (HF <c>Split</c>, behavior <c>Isolated</c>).</summary>
    public const string QwenPreTokenizerPattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>Merges placed before all learned ones: <c>"Ċ Ċ"</c> then <c>". ĊĊ"</c>, making <c>".ĊĊ"</c> one token.</summary>
    public static IReadOnlyList<string> ForcedMerges { get; } = ["Ċ Ċ", ". ĊĊ"];

    private static readonly Regex PreTokenizer = new(QwenPreTokenizerPattern, RegexOptions.CultureInvariant);

    /// <summary>Creates a builder.</summary>
    /// <param name="targetVocabSize">Upper bound on model vocabulary + special tokens (the embedding rows).</param>
    /// <param name="modelMaxLength">Written as <c>model_max_length</c>; the longest task example is about 200 tokens.</param>
    /// <param name="minPairFrequency">A pair seen fewer times than this is not merged.</param>
    public TaskTokenizerBuilder(int targetVocabSize = 384, int modelMaxLength = 512, int minPairFrequency = 2)
    {
        var floor = ByteLevelAlphabet.CharsInVocabularyOrder.Count + ForcedMerges.Count + TaskChatFormat.SpecialTokens.Count;
        if (targetVocabSize < floor)
            throw new ArgumentOutOfRangeException(nameof(targetVocabSize), $"Must be at least {floor} (256 bytes, forced merges, special tokens).");
        ArgumentOutOfRangeException.ThrowIfLessThan(modelMaxLength, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(minPairFrequency, 1);
        TargetVocabSize = targetVocabSize;
        ModelMaxLength = modelMaxLength;
        MinPairFrequency = minPairFrequency;
    }

    public int TargetVocabSize { get; }
    public int ModelMaxLength { get; }
    public int MinPairFrequency { get; }

    /// <summary>
    /// The training corpus for the task: chat-formatted training texts of <paramref name="problemCount"/> train-split
    /// problems (prompt, solution and <c>&lt;|im_end|&gt;</c>) plus the other message roles of the template.
    /// </summary>
    public static IEnumerable<string> TaskCorpus(ArithmeticChainTask task, int problemCount, int seed)
    {
        ArgumentNullException.ThrowIfNull(task);
        // The template's other roles, so "system" and "user" messages tokenize sensibly too.
        yield return $"{TaskChatFormat.ImStart}system\nYou are a helpful assistant.{TaskChatFormat.ImEnd}\n";
        foreach (var problem in task.Generate(TaskSplits.Train, problemCount, seed))
            yield return TaskChatFormat.TrainingText(problem);
    }

    /// <summary>The corpus of both task families of <paramref name="suite"/> (mixed as the suite mixes them).</summary>
    public static IEnumerable<string> TaskCorpus(TaskSuite suite, int problemCount, int seed)
    {
        ArgumentNullException.ThrowIfNull(suite);
        yield return $"{TaskChatFormat.ImStart}system\nYou are a helpful assistant.{TaskChatFormat.ImEnd}\n";
        foreach (var problem in suite.Generate(TaskSplits.Train, problemCount, seed))
            yield return TaskChatFormat.TrainingText(problem);
    }

    /// <summary>Trains on the corpus of both families of <paramref name="suite"/> and writes the tokenizer files.</summary>
    public ByteLevelBpeVocabulary BuildForTask(TaskSuite suite, string outputDirectory, int corpusProblems = 2000, int seed = 0)
    {
        var vocabulary = Train(TaskCorpus(suite, corpusProblems, seed));
        WriteFiles(vocabulary, outputDirectory);
        return vocabulary;
    }

    /// <summary>
    /// Trains on the task corpus and writes <c>tokenizer.json</c> and <c>tokenizer_config.json</c> into
    /// <paramref name="outputDirectory"/> (created when missing).
    /// </summary>
    public ByteLevelBpeVocabulary BuildForTask(ArithmeticChainTask task, string outputDirectory, int corpusProblems = 2000, int seed = 0)
    {
        var vocabulary = Train(TaskCorpus(task, corpusProblems, seed));
        WriteFiles(vocabulary, outputDirectory);
        return vocabulary;
    }

    /// <summary>
    /// Learns byte-level BPE merges over <paramref name="corpus"/> until the model vocabulary plus the special
    /// tokens reaches <see cref="TargetVocabSize"/> or no pair occurs <see cref="MinPairFrequency"/> times.
    /// Special tokens are cut out of the text before pre-tokenization, as the tokenizer does at encode time.
    /// Ties break on the ordinal order of the pair, so the result is a pure function of the corpus.
    /// </summary>
    public ByteLevelBpeVocabulary Train(IEnumerable<string> corpus)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        var words = CountWords(corpus);
        var tokens = ByteLevelAlphabet.CharsInVocabularyOrder.Select(c => c.ToString()).ToList();
        var known = tokens.ToHashSet(StringComparer.Ordinal);
        var merges = new List<string>();
        var budget = TargetVocabSize - TaskChatFormat.SpecialTokens.Count;

        void AddMerge(string left, string right)
        {
            var merged = left + right;
            // Two merges can build the same string ("a bc", "ab c"); like HF, keep the merge but not a second id.
            if (known.Add(merged))
                tokens.Add(merged);
            merges.Add($"{left} {right}");
            foreach (var word in words)
                MergeInPlace(word.Symbols, left, right, merged);
        }

        foreach (var forced in ForcedMerges)
        {
            var parts = forced.Split(' ');
            AddMerge(parts[0], parts[1]);
        }

        while (tokens.Count < budget)
        {
            var best = MostFrequentPair(words);
            if (best is null || best.Value.Count < MinPairFrequency)
                break;
            AddMerge(best.Value.Left, best.Value.Right);
        }
        return new ByteLevelBpeVocabulary(tokens, merges, TaskChatFormat.SpecialTokens);
    }

    /// <summary>Writes <c>tokenizer.json</c> and <c>tokenizer_config.json</c>.</summary>
    public void WriteFiles(ByteLevelBpeVocabulary vocabulary, string outputDirectory)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        Directory.CreateDirectory(outputDirectory);
        File.WriteAllText(Path.Combine(outputDirectory, "tokenizer.json"), TokenizerJson(vocabulary), Utf8NoBom);
        File.WriteAllText(Path.Combine(outputDirectory, "tokenizer_config.json"), TokenizerConfigJson(vocabulary), Utf8NoBom);
    }

    /// <summary>
    /// The Hugging Face <c>tokenizer.json</c> text: Qwen2 layout (normalizer null; pre_tokenizer Sequence of Split
    /// with <see cref="QwenPreTokenizerPattern"/> Isolated and ByteLevel without prefix space or regex; BPE model with
    /// <c>vocab</c> and <c>"a b"</c> merges; ByteLevel decoder), special tokens in <c>added_tokens</c>.
    /// </summary>
    public static string TokenizerJson(ByteLevelBpeVocabulary vocabulary)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        return WriteJson(json =>
        {
            json.WriteStartObject();
            json.WriteString("version", "1.0");
            json.WriteNull("truncation");
            json.WriteNull("padding");
            json.WriteStartArray("added_tokens");
            foreach (var special in vocabulary.SpecialTokens)
            {
                json.WriteStartObject();
                json.WriteNumber("id", vocabulary.SpecialTokenId(special));
                json.WriteString("content", special);
                json.WriteBoolean("single_word", false);
                json.WriteBoolean("lstrip", false);
                json.WriteBoolean("rstrip", false);
                json.WriteBoolean("normalized", false);
                json.WriteBoolean("special", true);
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteNull("normalizer");

            json.WriteStartObject("pre_tokenizer");
            json.WriteString("type", "Sequence");
            json.WriteStartArray("pretokenizers");
            json.WriteStartObject();
            json.WriteString("type", "Split");
            json.WriteStartObject("pattern");
            json.WriteString("Regex", QwenPreTokenizerPattern);
            json.WriteEndObject();
            json.WriteString("behavior", "Isolated");
            json.WriteBoolean("invert", false);
            json.WriteEndObject();
            WriteByteLevel(json, null, useRegex: false);
            json.WriteEndArray();
            json.WriteEndObject();

            WriteByteLevel(json, "post_processor", useRegex: false);
            WriteByteLevel(json, "decoder", useRegex: false);

            json.WriteStartObject("model");
            json.WriteString("type", "BPE");
            json.WriteNull("dropout");
            json.WriteNull("unk_token");
            json.WriteString("continuing_subword_prefix", "");
            json.WriteString("end_of_word_suffix", "");
            json.WriteBoolean("fuse_unk", false);
            json.WriteBoolean("byte_fallback", false);
            json.WriteBoolean("ignore_merges", false);
            json.WriteStartObject("vocab");
            for (var id = 0; id < vocabulary.Tokens.Count; id++)
                json.WriteNumber(vocabulary.Tokens[id], id);
            json.WriteEndObject();
            json.WriteStartArray("merges");
            foreach (var merge in vocabulary.Merges)
                json.WriteStringValue(merge);
            json.WriteEndArray();
            json.WriteEndObject();

            json.WriteEndObject();
        });
    }

    /// <summary>
    /// The <c>tokenizer_config.json</c> text. EOS is <c>&lt;|im_end|&gt;</c>: every assistant turn ends with it, so
    /// generation stops there (as in Qwen2.5-Instruct); <c>&lt;|endoftext|&gt;</c> is the pad token. No BOS is added.
    /// </summary>
    public string TokenizerConfigJson(ByteLevelBpeVocabulary vocabulary)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        return WriteJson(json =>
        {
            json.WriteStartObject();
            json.WriteBoolean("add_bos_token", false);
            json.WriteBoolean("add_eos_token", false);
            json.WriteBoolean("add_prefix_space", false);
            json.WriteStartObject("added_tokens_decoder");
            foreach (var special in vocabulary.SpecialTokens)
            {
                json.WriteStartObject(vocabulary.SpecialTokenId(special).ToString(System.Globalization.CultureInfo.InvariantCulture));
                json.WriteString("content", special);
                json.WriteBoolean("lstrip", false);
                json.WriteBoolean("normalized", false);
                json.WriteBoolean("rstrip", false);
                json.WriteBoolean("single_word", false);
                json.WriteBoolean("special", true);
                json.WriteEndObject();
            }
            json.WriteEndObject();
            json.WriteNull("bos_token");
            json.WriteString("eos_token", TaskChatFormat.ImEnd);
            json.WriteString("pad_token", TaskChatFormat.EndOfText);
            json.WriteNull("unk_token");
            json.WriteString("chat_template", TaskChatFormat.JinjaChatTemplate);
            json.WriteBoolean("clean_up_tokenization_spaces", false);
            json.WriteString("errors", "replace");
            json.WriteNumber("model_max_length", ModelMaxLength);
            json.WriteBoolean("split_special_tokens", false);
            json.WriteString("tokenizer_class", "Qwen2Tokenizer");
            json.WriteEndObject();
        });
    }

    private static readonly UTF8Encoding Utf8NoBom = new(encoderShouldEmitUTF8Identifier: false);

    private static string WriteJson(Action<Utf8JsonWriter> write)
    {
        var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
            write(json);
        return Encoding.UTF8.GetString(buffer.ToArray()) + "\n";
    }

    private static void WriteByteLevel(Utf8JsonWriter json, string? propertyName, bool useRegex)
    {
        if (propertyName is null)
            json.WriteStartObject();
        else
            json.WriteStartObject(propertyName);
        json.WriteString("type", "ByteLevel");
        json.WriteBoolean("add_prefix_space", false);
        json.WriteBoolean("trim_offsets", false);
        json.WriteBoolean("use_regex", useRegex);
        json.WriteEndObject();
    }

    /// <summary>A distinct pre-token (as byte-level symbols) and how often it occurs.</summary>
    private sealed class Word(List<string> symbols, long count)
    {
        public List<string> Symbols { get; } = symbols;
        public long Count { get; } = count;
    }

    private static List<Word> CountWords(IEnumerable<string> corpus)
    {
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var text in corpus)
        {
            foreach (var segment in SplitOnSpecialTokens(text))
            {
                foreach (Match piece in PreTokenizer.Matches(segment))
                {
                    var byteLevel = ByteLevelAlphabet.Encode(piece.Value);
                    counts[byteLevel] = counts.GetValueOrDefault(byteLevel) + 1;
                }
            }
        }
        return counts
            .OrderBy(pair => pair.Key, StringComparer.Ordinal)
            .Select(pair => new Word(pair.Key.Select(c => c.ToString()).ToList(), pair.Value))
            .ToList();
    }

    private static IEnumerable<string> SplitOnSpecialTokens(string text)
    {
        var start = 0;
        while (start < text.Length)
        {
            var next = -1;
            var nextLength = 0;
            foreach (var special in TaskChatFormat.SpecialTokens)
            {
                var at = text.IndexOf(special, start, StringComparison.Ordinal);
                if (at >= 0 && (next < 0 || at < next || (at == next && special.Length > nextLength)))
                {
                    next = at;
                    nextLength = special.Length;
                }
            }
            if (next < 0)
            {
                yield return text[start..];
                yield break;
            }
            if (next > start)
                yield return text[start..next];
            start = next + nextLength;
        }
    }

    private static (string Left, string Right, long Count)? MostFrequentPair(List<Word> words)
    {
        var pairCounts = new Dictionary<(string, string), long>();
        foreach (var word in words)
            for (var i = 0; i + 1 < word.Symbols.Count; i++)
            {
                var pair = (word.Symbols[i], word.Symbols[i + 1]);
                pairCounts[pair] = pairCounts.GetValueOrDefault(pair) + word.Count;
            }
        (string Left, string Right, long Count)? best = null;
        foreach (var ((left, right), count) in pairCounts)
        {
            if (best is null || count > best.Value.Count
                || (count == best.Value.Count && ComparePair(left, right, best.Value.Left, best.Value.Right) < 0))
                best = (left, right, count);
        }
        return best;
    }

    private static int ComparePair(string left, string right, string otherLeft, string otherRight)
    {
        var byLeft = string.CompareOrdinal(left, otherLeft);
        return byLeft != 0 ? byLeft : string.CompareOrdinal(right, otherRight);
    }

    /// <summary>Merges every non-overlapping (left, right) occurrence, scanning left to right as HF BPE training does.</summary>
    private static void MergeInPlace(List<string> symbols, string left, string right, string merged)
    {
        for (var i = 0; i + 1 < symbols.Count; i++)
        {
            if (string.Equals(symbols[i], left, StringComparison.Ordinal) && string.Equals(symbols[i + 1], right, StringComparison.Ordinal))
            {
                symbols[i] = merged;
                symbols.RemoveAt(i + 1);
            }
        }
    }
}
