using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model.Generation;

/// <summary>Per-row sampling settings for one batched sampling call.</summary>
internal readonly record struct RowSampling(double Temperature, double TopP, int TopK, double RepetitionPenalty, double Uniform);

/// <summary>
/// Batched sampling on the device: repetition penalty, temperature, top-k, top-p, then inverse-CDF
/// sampling driven by one uniform number per row drawn on the host from that candidate's own seeded
/// generator. A row's token therefore depends only on its own logits and seed, not on which other
/// sequences share the batch — the property that makes a retried candidate (same job, index, seed)
/// reproduce its trajectory. One host read-back per step (the sampled ids).
/// </summary>
internal static class TokenSampler
{
    /// <summary>Nucleus search first looks at this many most likely tokens and falls back to a full sort only when they hold too little mass.</summary>
    public const int CandidatePool = 256;

    /// <param name="logits">[B, V] fp32.</param>
    /// <param name="history">[B, L] token ids already in each row's sequence (rows padded by repeating one of their own
    /// tokens, which is harmless), or null when no row penalises. Gathering only those logits costs O(B·L), not O(B·V).</param>
    public static long[] Sample(Tensor logits, Tensor? history, RowSampling[] rows)
    {
        int b = rows.Length;
        long v = logits.shape[1];
        var device = logits.device;
        using var scope = NewDisposeScope();

        if (history is not null)
        {
            var penalty = tensor(rows.Select(r => (float)r.RepetitionPenalty).ToArray(), device: device).unsqueeze(1);
            var seen = logits.gather(1, history);
            var penalised = where(seen.Positive(), seen / penalty, seen * penalty);
            // Duplicate ids in a row scatter the same value, so repeats are penalised once, as in HF.
            logits = logits.scatter(1, history, penalised);
        }

        bool anyGreedy = rows.Any(r => r.Temperature == 0);
        bool allGreedy = rows.All(r => r.Temperature == 0);
        Tensor? greedy = anyGreedy ? logits.argmax(-1) : null;
        if (allGreedy) return greedy!.data<long>().ToArray();

        var temperature = tensor(rows.Select(r => (float)Math.Max(r.Temperature, 1e-5)).ToArray(), device: device).unsqueeze(1);
        var probs = (logits / temperature).softmax(-1);
        var uniform = tensor(rows.Select(r => (float)r.Uniform).ToArray(), device: device).unsqueeze(1);
        var topP = tensor(rows.Select(r => (float)r.TopP).ToArray(), device: device).unsqueeze(1);

        Tensor sampled;
        bool truncates = rows.Any(r => r.TopP < 1 || r.TopK > 0);
        if (!truncates)
        {
            // Full distribution: inverse CDF needs no sorting.
            sampled = InverseCdf(probs, uniform);
        }
        else
        {
            int maxTopK = rows.Max(r => r.TopK);
            long pool = Math.Min(v, Math.Max(CandidatePool, maxTopK));
            var (values, indices) = probs.topk((int)pool, dim: -1, largest: true, sorted: true);
            var topK = tensor(rows.Select(r => (long)(r.TopK > 0 ? r.TopK : pool)).ToArray(), device: device).unsqueeze(1);
            if (pool < v)
            {
                // The pool is exact for a row when it already holds top-p of the mass (or top-k fits in it).
                var covered = (values.sum(-1, keepdim: true) >= topP) | topK.LessThan(pool);
                if (!covered.all().item<bool>())
                    (values, indices) = probs.sort(dim: -1, descending: true);
            }
            long width = values.shape[1];
            var rank = arange(width, device: device).unsqueeze(0);
            var cumulative = values.cumsum(-1);
            // Keep a token while the mass before it is below top-p (so the first token always stays).
            var keep = (cumulative.sub(values) < topP) & (rank < topK);
            var kept = values * keep;
            var choice = InverseCdf(kept, uniform);
            sampled = indices.gather(1, choice.unsqueeze(1)).squeeze(1);
        }

        if (anyGreedy)
        {
            var isGreedy = tensor(rows.Select(r => r.Temperature == 0).ToArray(), device: device);
            sampled = where(isGreedy, greedy!, sampled);
        }
        return sampled.data<long>().ToArray();
    }

    /// <summary>Index i with cdf[i-1] ≤ u·total &lt; cdf[i], over unnormalised weights [B, W].</summary>
    private static Tensor InverseCdf(Tensor weights, Tensor uniform)
    {
        var cdf = weights.cumsum(-1);
        var target = uniform * cdf.narrow(1, cdf.shape[1] - 1, 1);
        var index = searchsorted(cdf.contiguous(), target.contiguous(), right: true).squeeze(1);
        // u·total can equal total through rounding; trailing zero-weight entries must never be picked.
        var lastPositive = weights.Positive().to_type(ScalarType.Int64).cumsum(-1).argmax(-1);
        return minimum(index, lastPositive);
    }
}
