using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Training.Trainers;

/// <summary>
/// The self-supervised process reward loss of MetaStone-S1 (sprm-reference.md §4.2–4.3, dp_actor.py):
/// every step carries its trajectory's final correctness y; a step takes part only when the head's
/// current prediction already agrees with y (logit &gt; 0 and y = 1, or logit &lt; 0 and y = 0), which
/// filters out the early, still-fine steps of trajectories that went wrong later; the kept steps are
/// class-balanced (w₊ = 1.5·n₋/(n₊+n₋), w₋ = n₊/(n₊+n₋), counts +1) and
/// loss = Σ w·BCE(logit, y) / (Σ w + 1e-5).
/// </summary>
public static class SprLoss
{
    /// <param name="logits">[N] step logits.</param>
    /// <param name="labels">[N] 0/1 trajectory correctness per step (float).</param>
    /// <param name="valid">Optional [N] bool: steps of trajectories that may be used at all (e.g. finished ones).</param>
    public static (Tensor Loss, Tensor Weights) Compute(Tensor logits, Tensor labels, Tensor? valid = null)
    {
        var agrees = ((logits > 0) & (labels > 0.5)) | ((logits < 0) & (labels < 0.5));
        var mask = valid is null ? agrees : agrees & valid;
        var maskF = mask.to_type(ScalarType.Float32);
        var positive = (maskF * labels).sum() + 1;
        var negative = (maskF * (1 - labels)).sum() + 1;
        var total = positive + negative;
        var weightPositive = 1.5 * negative / total;
        var weightNegative = positive / total;
        // The balancing weights are statistics of the batch, not functions to differentiate.
        var weights = (maskF * (labels * weightPositive + (1 - labels) * weightNegative)).detach();
        var bce = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction: nn.Reduction.None);
        var loss = (bce * weights).sum() / (weights.sum() + 1e-5);
        return (loss, weights);
    }
}
