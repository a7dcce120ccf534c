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
            // Truncation is a per-row probability threshold (keep p ≥ τ), found without sorting the vocabulary; the token is
            // then drawn by the same blocked inverse CDF as top-p 1 over the kept mass, so truncating costs top-p 1 plus the
            // threshold search, never less than it.
            var threshold = NucleusThreshold(probs, rows, topP);
            var kept = probs * probs.ge(threshold);
            sampled = BlockedInverseCdf(kept, uniform);
        }

        if (anyGreedy)
        {
            var isGreedy = tensor(rows.Select(r => r.Temperature == 0).ToArray(), device: device);
            sampled = where(isGreedy, greedy!, sampled);
        }
        return sampled.data<long>().ToArray();
    }

    /// <summary>Buckets per pass of the nucleus boundary search.</summary>
    public const int ThresholdBuckets = 256;

    /// <summary>Passes of the boundary search: each narrows the boundary's interval by <see cref="ThresholdBuckets"/>,
    /// three to 2⁻²⁴ of the pool's smallest probability, about one float ulp of it.</summary>
    public const int ThresholdPasses = 3;

    private static readonly Scalar LastBucket = (ThresholdBuckets - 1).ToScalar();
    private static readonly Scalar Buckets = ThresholdBuckets.ToScalar();

    /// <summary>
    /// Per row, the probability τ such that keeping p ≥ τ is that row's top-k ∩ top-p set: τ is the largest value with
    /// mass(p ≥ τ) ≥ top-p, i.e. the smallest probability the sort-based nucleus keeps ("keep a token while the mass before
    /// it is below top-p"). Ties at τ are all kept. [B, 1].
    /// </summary>
    /// <remarks>
    /// Rows whose nucleus (or top-k) lies within their <see cref="CandidatePool"/> most likely tokens — every row of a
    /// trained model at usual settings — read τ off the sorted pool. Otherwise (flat distributions: random weights, high
    /// temperature) the boundary lies below the pool and is found by bucketed search over the whole vocabulary: each pass
    /// splits the row's interval [lo, hi) into <see cref="ThresholdBuckets"/> equal buckets, sums the mass in each with one
    /// scatter_add, and keeps the bucket where the mass from the top crosses top-p. That is a few element-wise passes over
    /// [B, V] instead of a full sort (measured 875 ms per step at B = 32 on the 0.5B shape). Every operation is row-wise, and
    /// a row covered by its pool takes the pool's τ whatever the other rows need, so a row's τ depends only on its own
    /// logits and settings. The search's τ is the lower edge of the final bucket, so tokens within 2⁻²⁴ of the pool minimum
    /// below the exact boundary may be kept as well.
    /// </remarks>
    internal static Tensor NucleusThreshold(Tensor probs, RowSampling[] rows, Tensor topP)
    {
        var device = probs.device;
        long v = probs.shape[1];
        int maxTopK = rows.Max(r => r.TopK);
        long pool = Math.Min(v, Math.Max(CandidatePool, maxTopK));
        var (values, _) = probs.topk((int)pool, dim: -1, largest: true, sorted: true);
        var topK = tensor(rows.Select(r => (long)(r.TopK > 0 ? Math.Min(r.TopK, pool) : pool)).ToArray(), device: device).unsqueeze(1);
        var rank = TorchScalars.Arange(0, pool, device).unsqueeze(0);
        // Sorted pool: keep a token while the mass before it is below top-p (so the first token always stays) and its rank is below top-k.
        var keep = (values.cumsum(-1).sub(values) < topP) & (rank < topK);
        var last = keep.sum(-1, keepdim: true, type: ScalarType.Int64).Minus(Ones(device)).clamp_min(TorchScalars.Zero);
        var poolThreshold = values.gather(1, last);
        if (pool == v) return poolThreshold;

        // The pool is exact for a row when it holds top-p of the mass, or top-k cuts inside it.
        var covered = (values.sum(-1, keepdim: true) >= topP) | topK.LessThan(pool);
        if (covered.all().item<bool>()) return poolThreshold;

        // Invariant per row: mass(p ≥ lo) ≥ top-p > mass(p ≥ hi). At hi = the pool's smallest value it holds for an uncovered row.
        var lo = zeros_like(poolThreshold);
        var hi = values.narrow(1, pool - 1, 1).clone();
        for (int pass = 0; pass < ThresholdPasses; pass++)
        {
            var width = hi.Minus(lo).div(Buckets); // explicit Scalars throughout (TorchScalars)
            var above = (probs * probs.ge(hi)).sum(-1, keepdim: true);
            // Bucket of each token in [lo, hi); the others go to an extra bucket that is never read.
            var inRange = probs.ge(lo) & probs.lt(hi);
            var bucket = probs.Minus(lo).div(width).floor().clamp(TorchScalars.Zero, LastBucket).to_type(ScalarType.Int64);
            bucket = bucket.masked_fill(inRange.logical_not(), Buckets);
            var mass = zeros(probs.shape[0], ThresholdBuckets + 1, device: device).scatter_add(1, bucket, probs).narrow(1, 0, ThresholdBuckets);
            // Mass of p ≥ lower edge of bucket j: everything above hi plus buckets j..end (a reversed cumsum).
            var atLeast = mass.flip(1).cumsum(1).flip(1).Plus(above);
            // The highest bucket whose lower edge still has top-p above it holds the boundary.
            var crossing = atLeast.ge(topP).sum(-1, keepdim: true, type: ScalarType.Int64).Minus(Ones(device)).clamp_min(TorchScalars.Zero);
            var newLo = lo.Plus(width * crossing);
            hi = where(crossing.LessThan(ThresholdBuckets - 1), lo.Plus(width * crossing.Plus(Ones(device))), hi);
            lo = newLo;
        }
        return where(covered, poolThreshold, lo);
    }

    private static Tensor Ones(Device device) => ones(1, dtype: ScalarType.Int64, device: device);

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
