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
    /// <remarks>fp32 logits in CPU memory are sampled by <see cref="HostTokenSampler"/> (same rules, measured 4–5× faster
    /// at B = 32 and one sequence on Qwen's vocabulary); others, e.g. on a GPU, by torch ops on their device.</remarks>
    public static long[] Sample(Tensor logits, Tensor? history, RowSampling[] rows) =>
        HostTokenSampler.Supports(logits, history) ? HostTokenSampler.Sample(logits, history, rows) : SampleInTorch(logits, history, rows);

    /// <summary><see cref="Sample"/> in torch ops on the logits' device: the path for GPU logits (and the reference the
    /// CPU path, <see cref="HostTokenSampler"/>, is tested against).</summary>
    internal static long[] SampleInTorch(Tensor logits, Tensor? history, RowSampling[] rows)
    {
        int b = rows.Length;
        var device = logits.device;
        using var scope = NewDisposeScope();

        // Every [B, V] step of the sampler works in a per-thread workspace: a penalised copy, the temperature and an
        // in-place softmax, instead of three fresh full-vocabulary tensors. Without truncation the probabilities are
        // computed straight into the blocked inverse CDF's padded workspace (its padding columns stay zero); with it, into
        // their own (see ProbabilityWorkspace), since the threshold search uses the padded one as scratch.
        bool truncates = rows.Any(r => r.TopP < 1 || r.TopK > 0);
        long width = logits.shape[1];
        var padded = truncates ? null : Workspace(b, width, device).Values;
        var probs = padded?.narrow(1, 0, width) ?? ProbabilityWorkspace(b, width, device);
        probs.copy_(logits);
        if (history is not null)
        {
            var penalty = tensor(rows.Select(r => (float)r.RepetitionPenalty).ToArray(), device: device).unsqueeze(1);
            var seen = probs.gather(1, history);
            var penalised = where(seen.Positive(), seen / penalty, seen * penalty);
            // Duplicate ids in a row scatter the same value, so repeats are penalised once, as in HF.
            probs.scatter_(1, history, penalised);
        }

        bool anyGreedy = rows.Any(r => r.Temperature == 0);
        bool allGreedy = rows.All(r => r.Temperature == 0);
        Tensor? greedy = anyGreedy ? probs.argmax(-1) : null;
        if (allGreedy) return greedy!.data<long>().ToArray();

        var temperature = tensor(rows.Select(r => (float)Math.Max(r.Temperature, 1e-5)).ToArray(), device: device).unsqueeze(1);
        SoftmaxInPlace(probs.div_(temperature));
        var uniform = tensor(rows.Select(r => (float)r.Uniform).ToArray(), device: device).unsqueeze(1);
        var topP = tensor(rows.Select(r => (float)r.TopP).ToArray(), device: device).unsqueeze(1);

        // Full distribution: inverse CDF needs no sorting, and the two-level search needs no full-vocabulary cumsum over
        // the padded workspace the probabilities are already in.
        Tensor sampled = padded is not null ? BlockedInverseCdf(padded, uniform) : SampleTruncated(probs, rows, topP, uniform);

        if (anyGreedy)
        {
            var isGreedy = tensor(rows.Select(r => r.Temperature == 0).ToArray(), device: device);
            sampled = where(isGreedy, greedy!, sampled);
        }
        return sampled.data<long>().ToArray();
    }

    /// <summary>softmax over the last dimension, in place: exp(x − max) / Σ, the same steps as torch's softmax kernel
    /// (which multiplies by the reciprocal of the sum).</summary>
    internal static Tensor SoftmaxInPlace(Tensor x)
    {
        using var scope = NewDisposeScope();
        x.add_(x.amax([-1], keepdim: true), TorchScalars.MinusOne).exp_();    // explicit alpha: see TorchScalars
        x.mul_(x.sum(-1, keepdim: true).reciprocal_());
        return x;
    }

    /// <summary>Buckets per halving of the probability in <see cref="SearchThreshold"/>: its resolution is a factor 2^(1/256), 0.27 %.</summary>
    public const int BucketsPerOctave = 256;

    /// <summary>Octaves below the row's largest probability that <see cref="SearchThreshold"/> resolves; anything smaller shares the last bucket.</summary>
    public const int Octaves = 32;

    private const int ThresholdBuckets = BucketsPerOctave * Octaves;
    private static readonly Scalar NegativeBucketsPerOctave = (-(double)BucketsPerOctave).ToScalar();
    private static readonly Scalar LastBucket = ((double)(ThresholdBuckets - 1)).ToScalar();
    private static readonly Scalar LastBucketIndex = ((long)(ThresholdBuckets - 1)).ToScalar();
    private static readonly Scalar BucketsPerRow = ((long)ThresholdBuckets).ToScalar();
    private static readonly Scalar MinusOneOverBucketsPerOctave = (-1.0 / BucketsPerOctave).ToScalar();

    /// <summary>
    /// Top-k ∩ top-p sampling without sorting the vocabulary. A row whose nucleus (or top-k) lies within its
    /// <see cref="CandidatePool"/> most likely tokens — every row of a trained model at usual settings — samples inside the
    /// sorted pool: keep a token while the mass before it is below top-p and its rank below top-k, inverse CDF over the kept
    /// pool. Other rows (flat distributions: random weights, high temperatures) keep every token with p ≥ τ from
    /// <see cref="SearchThreshold"/> and sample the whole vocabulary by the blocked inverse CDF of top-p 1. The branch is
    /// chosen per row from the row alone, so a row's token depends only on its own logits, settings and uniform.
    /// </summary>
    internal static Tensor SampleTruncated(Tensor probs, RowSampling[] rows, Tensor topP, Tensor uniform)
    {
        var device = probs.device;
        long v = probs.shape[1];
        int maxTopK = rows.Max(r => r.TopK);
        long pool = Math.Min(v, Math.Max(CandidatePool, maxTopK));
        var (values, indices) = probs.topk((int)pool, dim: -1, largest: true, sorted: true);
        // Top-k off is pool + 1, not pool: a top-k equal to the pool (e.g. 300 > 256 as the batch's largest) then still
        // counts as cutting inside it, instead of falling to the threshold search, which ignores top-k.
        var topK = tensor(rows.Select(r => (long)(r.TopK > 0 ? r.TopK : pool + 1)).ToArray(), device: device).unsqueeze(1);
        var rank = TorchScalars.Arange(0, pool, device).unsqueeze(0);
        // Keep a token while the mass before it is below top-p (so the first token always stays).
        var keep = (values.cumsum(-1).sub(values) < topP) & (rank < topK);
        var choice = InverseCdf(values * keep, uniform);
        var fromPool = indices.gather(1, choice.unsqueeze(1)).squeeze(1);
        if (pool == v) return fromPool;

        // The pool is exact for a row when it holds top-p of the mass, or top-k cuts inside it.
        var covered = (values.sum(-1, keepdim: true) >= topP) | topK.LessThan(pool + 1);
        if (covered.all().item<bool>()) return fromPool;

        var threshold = SearchThreshold(probs, values.narrow(1, 0, 1), topP);
        // The kept mass goes into the workspace, whose padding columns (up to a whole CDF block) stay zero: no pad copy.
        var (kept, _) = Workspace(probs.shape[0], v, device);
        kept.narrow(1, 0, v).copy_(probs).masked_fill_(probs.lt(threshold), TorchScalars.Zero);
        return where(covered.squeeze(1), fromPool, BlockedInverseCdf(kept, uniform));
    }

    /// <summary>
    /// Per row, a probability τ such that {p ≥ τ} is the top-p nucleus, found from one histogram of the row instead of a
    /// sort: each token falls in bucket ⌊−256·log2(p / p_max)⌋ (0.27 % wide, 32 octaves; smaller ones share the last), one
    /// weighted <c>bincount</c> sums the mass per bucket, and the bucket where the running mass from the top reaches top-p
    /// holds the boundary; τ is that bucket's lower edge. [B, 1].
    /// </summary>
    /// <remarks>
    /// The kept set is the sort-based nucleus plus, at most, the other tokens of the boundary bucket: tokens within a factor
    /// 2^(1/256) of the smallest probability the nucleus keeps. Full-vocabulary temporaries are what cost here (each new
    /// [B, V] tensor is fresh pages: 20–200 ms at B = 32 on the loaded 2-core machine), so the index is computed in place in
    /// one float buffer and converted once; a 3-pass linear-bucket search with ~10 new [B, V] tensors per pass measured 6.6 s
    /// per call at B = 32 under load, slower than the full sort it replaced.
    /// </remarks>
    /// <param name="largest">Each row's largest probability [B, 1].</param>
    internal static Tensor SearchThreshold(Tensor probs, Tensor largest, Tensor topP)
    {
        long rows = probs.shape[0], width = probs.shape[1];
        var device = probs.device;
        var (work, index) = Workspace(rows, width, device);
        var bucket = work.narrow(1, 0, width);
        bucket.copy_(probs).div_(largest);                                   // p / p_max in (0, 1]
        bucket.log2_().mul_(NegativeBucketsPerOctave).floor_().clamp_(TorchScalars.Zero, LastBucket);   // log2(0) = -inf lands in the last bucket
        index.copy_(bucket);
        index.add_(TorchScalars.Arange(0, rows, device, ScalarType.Int32).mul_(BucketsPerRow).unsqueeze(1), TorchScalars.One);
        var mass = bincount(index.view(-1), probs.reshape(-1), rows * ThresholdBuckets).view(rows, ThresholdBuckets).to_type(ScalarType.Float32);
        // First bucket whose running mass reaches top-p (the last bucket when rounding keeps the total just below it).
        var boundary = mass.cumsum(1).lt(topP).sum(-1, keepdim: true, type: ScalarType.Int64).clamp_max(LastBucketIndex);
        // Lower edge of bucket b: p_max · 2^(−(b+1)/256); the last bucket has no lower edge (everything it holds is kept).
        var edge = largest * boundary.Plus(Ones(device)).to_type(ScalarType.Float32).mul(MinusOneOverBucketsPerOctave).exp2();
        return where(boundary.LessThan(ThresholdBuckets - 1), edge, zeros_like(edge));
    }

    private static Tensor Ones(Device device) => ones(1, dtype: ScalarType.Int64, device: device);

    // Per-thread buffers of the threshold search (the engine samples on its one thread): a fresh [B, V] tensor costs
    // its page faults on every step (measured 80–90 ms per 20 MB at B = 32 on the loaded machine; the float→int64
    // conversion alone 450 ms), so the search writes into memory that stays mapped. fp32 [B, V rounded up to a CDF block]
    // (its padding columns stay zero) and int32 [B, V]: 39 MB at B = 32 on Qwen's vocabulary, kept for the thread's life.
    [ThreadStatic] private static Tensor? _workspace;
    [ThreadStatic] private static Tensor? _indexWorkspace;

    // The probabilities of one step, [B, V] fp32, per thread like the buffers above. Measured in the engine at B = 32 on
    // the 0.5B shape: sampling took 100 ms per step at top-p 0.95 and 44–70 ms at top-p 1 next to a 140–170 ms forward,
    // with ~1 GB of minor page faults per 32-token request (2 s of system time) — fresh [B, V] tensors (the penalised
    // logits, logits / T, softmax) whose memory the C heap hands back to the kernel between steps.
    [ThreadStatic] private static Tensor? _probabilityWorkspace;

    private static Tensor ProbabilityWorkspace(long rows, long width, Device device)
    {
        if (_probabilityWorkspace is null || _probabilityWorkspace.shape[0] < rows || _probabilityWorkspace.shape[1] != width
            || _probabilityWorkspace.device.ToString() != device.ToString())
        {
            _probabilityWorkspace?.Dispose();
            _probabilityWorkspace = empty(rows, width, device: device).DetachFromDisposeScope();
        }
        return _probabilityWorkspace.narrow(0, 0, rows);
    }

    private static (Tensor Values, Tensor Indices) Workspace(long rows, long width, Device device)
    {
        long padded = (width + CdfBlock - 1) / CdfBlock * CdfBlock;
        if (_workspace is null || _indexWorkspace is null || _workspace.shape[0] < rows || _workspace.shape[1] != padded
            || _workspace.device.ToString() != device.ToString())
        {
            _workspace?.Dispose();
            _indexWorkspace?.Dispose();
            _workspace = zeros(rows, padded, device: device).DetachFromDisposeScope();
            _indexWorkspace = zeros(rows, width, dtype: ScalarType.Int32, device: device).DetachFromDisposeScope();
        }
        return (_workspace.narrow(0, 0, rows), _indexWorkspace.narrow(0, 0, rows));
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
