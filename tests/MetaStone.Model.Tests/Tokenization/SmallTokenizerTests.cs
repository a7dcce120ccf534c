using MetaStone.Model.Tokenization;
using static MetaStone.Model.Tests.Tokenization.SmallTokenizerJson;

namespace MetaStone.Model.Tests.Tokenization;

/// <summary>QwenTokenizer on minimal project-built byte-level BPE files (the shape a colleague's tiny model uses).</summary>
public sealed class SmallTokenizerTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Step_text_is_one_id_and_added_tokens_are_single_ids(bool mergesAsArrays)
    {
        using var dir = new TempDirectory();
        var tokenizer = QwenTokenizer.FromFile(Write(dir.Path, new Options { MergesAsArrays = mergesAsArrays }));

        Assert.Equal([DotNewlineNewline], tokenizer.Encode(".\n\n"));
        Assert.Equal([DotNewlineNewline], tokenizer.StepTokenIds);
        for (int i = 0; i < ChatTokens.Length; i++)
        {
            Assert.Equal([FirstAddedId + i], tokenizer.Encode(ChatTokens[i]));
            Assert.Equal(FirstAddedId + i, tokenizer.GetTokenId(ChatTokens[i]));
            Assert.True(tokenizer.IsSpecial(FirstAddedId + i));
        }
        Assert.Equal(FirstAddedId + ChatTokens.Length, tokenizer.VocabSize);
        Assert.Equal(ChatTokens.Length, tokenizer.SpecialTokens.Count);
        Assert.False(tokenizer.IsSpecial(DotNewlineNewline));
        Assert.Null(tokenizer.EosTokenId);
    }

    [Fact]
    public void Encodes_chat_markup_bytes_and_merges_and_round_trips()
    {
        using var dir = new TempDirectory();
        var tokenizer = QwenTokenizer.FromFile(Write(dir.Path));
        int imStart = tokenizer.GetTokenId("<|im_start|>"), imEnd = tokenizer.GetTokenId("<|im_end|>");
        int think = tokenizer.GetTokenId("<think>"), endThink = tokenizer.GetTokenId("</think>");

        string text = "<|im_start|>user\nhi<|im_end|>\n<think>\nOk.\n\n</think>";
        int[] ids = tokenizer.Encode(text);
        int[] expected =
        [
            imStart, 'u', 's', 'e', 'r', 10, Hi, imEnd, 10, think, 10, 'O', 'k', DotNewlineNewline, endThink,
        ];
        Assert.Equal(expected, ids);
        Assert.Equal(text, tokenizer.Decode(ids));
        Assert.Equal("user\nhi\n\nOk.\n\n", tokenizer.Decode(ids, skipSpecialTokens: true));

        // A space is byte 0x20 ('Ġ' in the vocabulary); non-ASCII text falls back to its UTF-8 bytes.
        Assert.Equal("é 🙂 世界", tokenizer.Decode(tokenizer.Encode("é 🙂 世界")));
        Assert.Equal(new int[] { ' ', Hi }, tokenizer.Encode(" hi"));
        Assert.Equal(' ', tokenizer.GetTokenId("Ġ"));
    }

    [Fact]
    public void Streaming_decoder_holds_back_split_characters()
    {
        using var dir = new TempDirectory();
        var tokenizer = QwenTokenizer.FromFile(Write(dir.Path));
        int[] ids = tokenizer.Encode("a🙂b世");
        Assert.Equal(1 + 4 + 1 + 3, ids.Length); // every byte is its own token here

        var decoder = tokenizer.CreateStreamingDecoder();
        var pieces = ids.Select(decoder.Push).ToArray();
        Assert.Equal(["a", "", "", "", "🙂", "b", "", "", "世"], pieces);
        Assert.Equal("", decoder.Flush());
    }

    [Fact]
    public void Missing_pre_tokenizer_falls_back_to_the_qwen_pattern()
    {
        using var dir = new TempDirectory();
        var tokenizer = QwenTokenizer.FromFile(Write(dir.Path, new Options { PreTokenizerJson = null }));
        Assert.Equal([DotNewlineNewline], tokenizer.Encode(".\n\n"));
        Assert.Equal([FirstAddedId + 1, DotNewlineNewline, FirstAddedId + 2], tokenizer.Encode("<think>.\n\n</think>"));
    }

    [Fact]
    public void Byte_level_pre_tokenizer_alone_uses_the_gpt2_regex()
    {
        using var dir = new TempDirectory();
        // use_regex defaults to true: the GPT-2 regex keeps ".\n\n" apart (". " then "\n\n"), unlike Qwen's.
        var tokenizer = QwenTokenizer.FromFile(Write(dir.Path, new Options { PreTokenizerJson = """{"type":"ByteLevel","add_prefix_space":false}""" }));
        Assert.Equal(new int[] { '.', 10, 10 }, tokenizer.Encode(".\n\n"));
    }

    [Fact]
    public void Longest_added_token_wins_when_one_is_a_prefix_of_another()
    {
        using var dir = new TempDirectory();
        var tokenizer = QwenTokenizer.FromFile(Write(dir.Path, new Options { AddedTokens = ["<a>", "<a>b"] }));
        Assert.Equal([FirstAddedId + 1], tokenizer.Encode("<a>b"));
        Assert.Equal(new int[] { FirstAddedId, 'c' }, tokenizer.Encode("<a>c"));
    }

    [Fact]
    public void From_directory_reads_eos_token_from_tokenizer_config()
    {
        using var dir = new TempDirectory();
        Write(dir.Path);
        SmallTokenizerJson.WriteConfig(dir.Path, chatTemplate: null, eosToken: "<|im_end|>");
        var tokenizer = QwenTokenizer.FromDirectory(dir.Path);
        Assert.Equal(tokenizer.GetTokenId("<|im_end|>"), tokenizer.EosTokenId);
    }

    [Fact]
    public void Errors_name_what_is_missing()
    {
        using var dir = new TempDirectory();
        var tokenizer = QwenTokenizer.FromFile(Write(dir.Path));
        var missingToken = Assert.Throws<KeyNotFoundException>(() => tokenizer.GetTokenId("<|nope|>"));
        Assert.Contains("<|nope|>", missingToken.Message);

        var missingFile = Assert.Throws<FileNotFoundException>(() => QwenTokenizer.FromDirectory(Path.Combine(dir.Path, "absent")));
        Assert.Contains("tokenizer.json", missingFile.Message);

        // Out-of-vocabulary ids (e.g. the padded rows of the model's embedding) decode to nothing, as in Hugging Face.
        Assert.Equal("hi", tokenizer.Decode([Hi, 100_000, -1]));
    }
}
