using MetaStone.Model.Tokenization;
using MetaStone.Tests.Shared;

namespace MetaStone.Model.Tests;

/// <summary>
/// <see cref="ReflectiveModel.Load"/> reads the tokenizer on another thread while it reads the weights: the result and the
/// errors must be those of reading them one after the other, and a tokenizer the caller already read is used as is.
/// </summary>
public sealed class ReflectiveModelLoadTests : IDisposable
{
    private static readonly string Tiny = Path.Combine(TestPaths.RepoRoot, "models", "metastone-tiny");
    private readonly BrokenModelCopies _copies = new(Tiny);

    public void Dispose() => _copies.Dispose();

    private string Copy(string name, Action<string> breakIt) => _copies.Make(name, breakIt);

    private static void Truncate(string path, int keep) => BrokenModelCopies.Truncate(path, keep);

    [Fact]
    public void ABrokenTokenizerIsReportedAheadOfABrokenCheckpoint()
    {
        string both = Copy("both", d =>
        {
            Truncate(Path.Combine(d, "tokenizer.json"), 200);
            Truncate(Path.Combine(d, "model.safetensors"), 4096);
        });
        var error = Assert.Throws<ModelLoadException>(() => ReflectiveModel.Load(both, new ModelLoadOptions { MaxBatch = 1, MaxSequenceLength = 16 }));
        Assert.Contains("tokenizer", error.Message, StringComparison.OrdinalIgnoreCase);

        string weightsOnly = Copy("weights", d => Truncate(Path.Combine(d, "model.safetensors"), 4096));
        error = Assert.Throws<ModelLoadException>(() => ReflectiveModel.Load(weightsOnly, new ModelLoadOptions { MaxBatch = 1, MaxSequenceLength = 16 }));
        Assert.Contains("model.safetensors", error.Message, StringComparison.Ordinal);

        string tokenizerOnly = Copy("tokenizer", d => Truncate(Path.Combine(d, "tokenizer.json"), 200));
        error = Assert.Throws<ModelLoadException>(() => ReflectiveModel.Load(tokenizerOnly, new ModelLoadOptions { MaxBatch = 1, MaxSequenceLength = 16 }));
        Assert.Contains("tokenizer", error.Message, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void AGivenTokenizerIsUsedAndTheLoadedModelEncodesAsAFreshOne()
    {
        var given = QwenTokenizer.FromDirectory(Tiny);
        using var withGiven = ReflectiveModel.Load(Tiny, new ModelLoadOptions { MaxBatch = 1, MaxSequenceLength = 16, Tokenizer = given, WarmUp = false });
        Assert.Same(given, withGiven.Tokenizer);
        using var fresh = ReflectiveModel.Load(Tiny, new ModelLoadOptions { MaxBatch = 1, MaxSequenceLength = 16, WarmUp = false });
        Assert.NotSame(given, fresh.Tokenizer);
        const string question = "Compute 1 + 2 from left to right.";
        Assert.Equal(fresh.EncodePrompt(question), withGiven.EncodePrompt(question));
        Assert.Equal(fresh.Template.Name, withGiven.Template.Name);
    }
}
