using MetaStone.Reasoning;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model.Generation;

/// <summary>
/// Scores a finished trajectory the way the released MetaStone pipeline does: one full forward pass over
/// prompt + response, <c>hidden_states[-2]</c> at the step mask's positions, head, sigmoid. The engine
/// does not need this (it scores in flight); it is the reference the in-flight scores are checked against
/// and the baseline of the "generate, then re-encode" benchmark.
/// </summary>
public static class ReencodeScorer
{
    public static IReadOnlyList<StepScore> Score(Qwen2ForCausalLM model, SprmHead head, StepTokenSet rules,
        IReadOnlyList<int> promptIds, IReadOnlyList<int> responseIds)
    {
        var all = promptIds.Concat(responseIds).ToArray();
        var positions = StepMask.FeaturePositions(all, rules, responseStart: promptIds.Count);
        if (positions.Count == 0) return [];
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var ids = tensor(all.Select(i => (long)i).ToArray(), device: model.Device).unsqueeze(0);
        var features = model.ForwardFull(ids, allPositions: true).SprmFeatures[0];
        var logits = head.LogitsOfRows(features, [.. positions.Select(p => (long)p)]);
        return positions.Select((p, j) => new StepScore(p + 1, p + 1 - promptIds.Count, logits[j])).ToList();
    }
}
