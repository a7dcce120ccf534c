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
            // Full distribution: inverse CDF needs no sorting, and the two-level search needs no full-vocabulary cumsum.
            sampled = BlockedInverseCdf(probs, uniform);
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

    /// <summary>Width of a block of <see cref="BlockedInverseCdf"/>.</summary>
    public const int CdfBlock = 1024;
    private static readonly Scalar BlockWidth = CdfBlock.ToScalar();

    /// <summary>
    /// <see cref="InverseCdf"/> in two levels: the block whose mass holds u·total (a cumsum over ~V/1024 block sums), then the
    /// token inside that block (a cumsum over 1024 weights). On the full vocabulary (B × 151,936) the one-level search ran two
    /// full-width cumsums, one of them in int64, and cost more than the forward pass (measured: top-p 1 engine step 388 ms vs a
    /// 137 ms forward at B = 32 on the 0.5B shape), which made `--top-p 1` the slowest setting instead of the cheapest.
    /// </summary>
    internal static Tensor BlockedInverseCdf(Tensor weights, Tensor uniform)
    {
        long rows = weights.shape[0], width = weights.shape[1];
        if (width <= 4L * CdfBlock) return InverseCdf(weights, uniform);
        long blocks = (width + CdfBlock - 1) / CdfBlock;
        var padded = blocks * CdfBlock == width ? weights : nn.functional.pad(weights, [0, blocks * CdfBlock - width]);
        var blocked = padded.view(rows, blocks, CdfBlock);
        var blockMass = blocked.sum(-1);                                           // [B, blocks]
        var block = InverseCdf(blockMass, uniform);                                // [B]
        var blockCdf = blockMass.cumsum(-1);
        var target = uniform * blockCdf.narrow(1, blocks - 1, 1);                  // u·total, [B, 1]
        var mass = blockMass.gather(1, block.unsqueeze(1));                        // [B, 1]
        var before = blockCdf.gather(1, block.unsqueeze(1)).Minus(mass);
        // Where u·total falls inside the chosen block, as a fraction of its mass (the inner search multiplies it back).
        // Explicit Scalars only (TorchScalars): implicit ones are freed by finalizers during native calls.
        var inner = target.Minus(before).div(mass).clamp(TorchScalars.Zero, TorchScalars.One);
        var within = blocked.gather(1, block.view(rows, 1, 1).expand(rows, 1, CdfBlock)).squeeze(1);   // [B, CdfBlock]
        return block.mul(BlockWidth).Plus(InverseCdf(within, inner));
    }

    /// <summary>Index i with cdf[i-1] ≤ u·total &lt; cdf[i], over unnormalised weights [B, W].</summary>
    internal static Tensor InverseCdf(Tensor weights, Tensor uniform)
    {
        var cdf = weights.cumsum(-1);
        var target = uniform * cdf.narrow(1, cdf.shape[1] - 1, 1);
        var index = searchsorted(cdf.contiguous(), target.contiguous(), right: true).squeeze(1);
        // u·total can equal total through rounding; trailing zero-weight entries must never be picked.
        var lastPositive = weights.Positive().to_type(ScalarType.Int64).cumsum(-1).argmax(-1);
        return minimum(index, lastPositive);
    }
}
