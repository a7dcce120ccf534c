using System.Text.Json;
using System.Text.RegularExpressions;
using MetaStone.Training.Tasks;
using Microsoft.ML.Tokenizers;

namespace MetaStone.Training.Tests;

/// <summary>Builds the task tokenizer once and reloads the written tokenizer.json with Microsoft.ML.Tokenizers.</summary>
public sealed class TaskTokenizerFixture : IDisposable
{
    public TaskTokenizerFixture()
    {
        Directory = TestPaths.NewTempDirectory("task-tokenizer");
        Builder = new TaskTokenizerBuilder(targetVocabSize: 384);
        Vocabulary = Builder.BuildForTask(new ArithmeticChainTask(), Directory, corpusProblems: 2000, seed: 0);
        (Tokenizer, SpecialTokens, ModelVocabularySize) = Load(Path.Combine(Directory, "tokenizer.json"));
    }

    public string Directory { get; }
    public TaskTokenizerBuilder Builder { get; }
    public ByteLevelBpeVocabulary Vocabulary { get; }
    public BpeTokenizer Tokenizer { get; }
    public IReadOnlyDictionary<string, int> SpecialTokens { get; }
    public int ModelVocabularySize { get; }

    public void Dispose() => System.IO.Directory.Delete(Directory, recursive: true);

    /// <summary>Reads the file the way a Qwen2 tokenizer.json is read (torchsharp-notes §6), independently of the builder.</summary>
    private static (BpeTokenizer, IReadOnlyDictionary<string, int>, int) Load(string path)
    {
        using var document = JsonDocument.Parse(File.ReadAllText(path));
        var root = document.RootElement;
        var model = root.GetProperty("model");
        Assert.Equal("BPE", model.GetProperty("type").GetString());
        var vocab = model.GetProperty("vocab").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetInt32());
        var merges = model.GetProperty("merges").EnumerateArray().Select(m => m.GetString()!).ToList();
        var special = root.GetProperty("added_tokens").EnumerateArray()
            .ToDictionary(t => t.GetProperty("content").GetString()!, t => t.GetProperty("id").GetInt32());
        var split = root.GetProperty("pre_tokenizer").GetProperty("pretokenizers")[0];
        Assert.Equal("Split", split.GetProperty("type").GetString());
        Assert.Equal("Isolated", split.GetProperty("behavior").GetString());
        var pattern = split.GetProperty("pattern").GetProperty("Regex").GetString()!;
        var tokenizer = BpeTokenizer.Create(new BpeOptions(vocab)
        {
            Merges = merges,
            ByteLevel = true,
            SpecialTokens = special,
            PreTokenizer = new RegexPreTokenizer(new Regex(pattern), special),
        });
        return (tokenizer, special, vocab.Count);
    }
}

public sealed class TaskTokenizerBuilderTests(TaskTokenizerFixture fixture) : IClassFixture<TaskTokenizerFixture>
{
    private BpeTokenizer Tokenizer => fixture.Tokenizer;

    [Fact]
    public void Step_token_is_a_single_id_alone_and_in_context()
    {
        var stepIds = Tokenizer.EncodeToIds(".\n\n");
        var stepId = Assert.Single(stepIds);
        Assert.Equal(fixture.Vocabulary.TokenId(".ĊĊ"), stepId);

        var inContext = Tokenizer.EncodeToIds("432 - 29 = 403.\n\n");
        Assert.Equal(stepId, inContext[^1]);
        Assert.DoesNotContain(fixture.Vocabulary.TokenId("."), inContext);
    }

    [Fact]
    public void Special_tokens_are_single_ids_following_the_model_vocabulary()
    {
        Assert.Equal(TaskChatFormat.SpecialTokens, fixture.SpecialTokens.OrderBy(p => p.Value).Select(p => p.Key));
        foreach (var (content, id) in fixture.SpecialTokens)
        {
            Assert.Equal([id], Tokenizer.EncodeToIds(content));
            Assert.True(id >= fixture.ModelVocabularySize);
        }
        var ids = Tokenizer.EncodeToIds("<|im_start|>assistant\n<think>\n1 + 2 = 3.\n\n</think>");
        Assert.Equal(fixture.SpecialTokens[TaskChatFormat.ImStart], ids[0]);
        Assert.Equal(fixture.SpecialTokens[TaskChatFormat.ThinkOpen], ids[3]);
        Assert.Equal(fixture.SpecialTokens[TaskChatFormat.ThinkClose], ids[^1]);
    }

    [Fact]
    public void Training_texts_round_trip_and_contain_one_step_token_per_operation()
    {
        var stepId = fixture.Vocabulary.TokenId(".ĊĊ");
        // Dev problems: text the tokenizer was not trained on.
        foreach (var problem in new ArithmeticChainTask().Generate(TaskSplits.Dev, 200, seed: 21))
        {
            var text = TaskChatFormat.TrainingText(problem);
            var ids = Tokenizer.EncodeToIds(text);
            Assert.Equal(text, Tokenizer.Decode(ids));
            Assert.Equal(problem.Ops.Count, ids.Count(id => id == stepId));
            Assert.True(ids.Count <= fixture.Builder.ModelMaxLength);

            var solution = ArithmeticChainTask.Solution(problem);
            Assert.Equal(solution, Tokenizer.Decode(Tokenizer.EncodeToIds(solution)));
        }
    }

    [Fact]
    public void Arbitrary_text_round_trips_through_the_byte_alphabet()
    {
        const string text = "Héllo wörld, 世界 🙂 tabs\tand\r\nCRLF.\n\n\n";
        Assert.Equal(text, Tokenizer.Decode(Tokenizer.EncodeToIds(text)));
    }

    [Fact]
    public void Vocabulary_stays_within_the_target_and_is_deterministic()
    {
        Assert.True(fixture.Vocabulary.TotalSize <= fixture.Builder.TargetVocabSize);
        Assert.Equal(fixture.Vocabulary.Tokens.Count, fixture.ModelVocabularySize);
        Assert.Equal(TaskTokenizerBuilder.ForcedMerges, fixture.Vocabulary.Merges.Take(2));

        var again = fixture.Builder.Train(TaskTokenizerBuilder.TaskCorpus(new ArithmeticChainTask(), 2000, seed: 0));
        Assert.Equal(fixture.Vocabulary.Merges, again.Merges);
        Assert.Equal(fixture.Vocabulary.Tokens, again.Tokens);
    }

    [Fact]
    public void Small_target_is_respected()
    {
        var small = new TaskTokenizerBuilder(targetVocabSize: 280)
            .Train(TaskTokenizerBuilder.TaskCorpus(new ArithmeticChainTask(), 200, seed: 1));
        Assert.Equal(280, small.TotalSize);
    }

    [Fact]
    public void Tokenizer_config_declares_eos_chat_template_and_max_length()
    {
        using var document = JsonDocument.Parse(File.ReadAllText(Path.Combine(fixture.Directory, "tokenizer_config.json")));
        var config = document.RootElement;
        Assert.Equal("<|im_end|>", config.GetProperty("eos_token").GetString());
        Assert.Equal("<|endoftext|>", config.GetProperty("pad_token").GetString());
        Assert.Equal(fixture.Builder.ModelMaxLength, config.GetProperty("model_max_length").GetInt32());
        var template = config.GetProperty("chat_template").GetString()!;
        Assert.Contains("<|im_start|>assistant\\n<think>\\n", template);
        var decoder = config.GetProperty("added_tokens_decoder");
        foreach (var (content, id) in fixture.SpecialTokens)
            Assert.Equal(content, decoder.GetProperty(id.ToString(System.Globalization.CultureInfo.InvariantCulture)).GetProperty("content").GetString());

        using var tokenizerJson = JsonDocument.Parse(File.ReadAllText(Path.Combine(fixture.Directory, "tokenizer.json")));
        var root = tokenizerJson.RootElement;
        Assert.Equal(JsonValueKind.Null, root.GetProperty("normalizer").ValueKind);
        Assert.Equal("ByteLevel", root.GetProperty("decoder").GetProperty("type").GetString());
        var byteLevel = root.GetProperty("pre_tokenizer").GetProperty("pretokenizers")[1];
        Assert.Equal("ByteLevel", byteLevel.GetProperty("type").GetString());
        Assert.False(byteLevel.GetProperty("add_prefix_space").GetBoolean());
        Assert.False(byteLevel.GetProperty("use_regex").GetBoolean());
        Assert.Equal(TaskTokenizerBuilder.QwenPreTokenizerPattern,
            root.GetProperty("pre_tokenizer").GetProperty("pretokenizers")[0].GetProperty("pattern").GetProperty("Regex").GetString());
    }
}
