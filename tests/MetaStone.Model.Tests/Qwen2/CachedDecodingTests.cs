using static TorchSharp.torch;

namespace MetaStone.Model.Tests.Qwen2;

public sealed class CachedDecodingTests
{
    /// <summary>
    /// A batch of sequences of different lengths, prefilled into scattered slots and then decoded together
    /// step by step, gives the same logits and SPRM features as one full forward over each whole sequence.
    /// </summary>
    [Fact]
    public void BatchedIncrementalDecodingMatchesFullForward()
    {
        using var model = ReferenceForwardTests.LoadFixtureModel("qwen2-tiny-random");
        var rng = new Random(3);
        int[] promptLengths = [3, 9, 5];
        long[] slots = [4, 0, 2];
        const int steps = 7;
        var sequences = promptLengths.Select(n => Enumerable.Range(0, n + steps).Select(_ => (long)rng.Next(2, 512)).ToArray()).ToArray();

        using var cache = new KvCache(model.Config, slots: 6, maxLength: 32, CPU, model.KvDtype);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        for (int s = 0; s < sequences.Length; s++)
            model.Prefill(tensor(sequences[s].Take(promptLengths[s]).ToArray()).unsqueeze(0), cache, (int)slots[s], 0);

        var full = sequences.Select(seq => model.ForwardFull(tensor(seq).unsqueeze(0))).ToArray();
        for (int step = 0; step < steps; step++)
        {
            var positions = promptLengths.Select(n => (long)(n + step)).ToArray();
            var ids = sequences.Select((seq, s) => seq[positions[s]]).ToArray();
            var output = model.Decode(tensor(ids), cache, slots, positions);
            for (int s = 0; s < sequences.Length; s++)
            {
                ReferenceForwardTests.AssertClose(
                    full[s].Logits[0, positions[s]].data<float>().ToArray(),
                    output.Logits[s].data<float>().ToArray(), 1e-4, $"seq {s} step {step} logits");
                ReferenceForwardTests.AssertClose(
                    full[s].SprmFeatures[0, positions[s]].data<float>().ToArray(),
                    output.SprmFeatures[s].data<float>().ToArray(), 1e-4, $"seq {s} step {step} features");
            }
        }
    }

    [Fact]
    public void ChunkedPrefillContinuesACachedSequence()
    {
        using var model = ReferenceForwardTests.LoadFixtureModel("qwen2-tiny-random-tied");
        var ids = Enumerable.Range(0, 12).Select(i => (long)(i * 37 % 500 + 3)).ToArray();
        using var cache = new KvCache(model.Config, slots: 1, maxLength: 16, CPU, model.KvDtype);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        model.Prefill(tensor(ids.Take(5).ToArray()).unsqueeze(0), cache, 0, 0);
        var rest = model.Prefill(tensor(ids.Skip(5).ToArray()).unsqueeze(0), cache, 0, 5, allPositions: true);
        var full = model.ForwardFull(tensor(ids).unsqueeze(0));
        ReferenceForwardTests.AssertClose(
            full.Logits[0].narrow(0, 5, 7).reshape(-1).data<float>().ToArray(),
            rest.Logits[0].reshape(-1).data<float>().ToArray(), 1e-4, "continued prefill logits");
    }

    [Fact]
    public void SequenceLongerThanContextIsAClearError()
    {
        using var model = ReferenceForwardTests.LoadFixtureModel("qwen2-tiny-random");
        using var scope = NewDisposeScope();
        var ids = zeros(1, model.Config.MaxPositionEmbeddings + 1, dtype: ScalarType.Int64);
        var e = Assert.Throws<ArgumentException>(() => model.ForwardFull(ids));
        Assert.Contains("longer than the model's context window of 256 tokens", e.Message);
    }
}
