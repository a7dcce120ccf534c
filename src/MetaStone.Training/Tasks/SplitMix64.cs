namespace MetaStone.Training.Tasks;

/// <summary>
/// A tiny seeded PRNG (SplitMix64). Used instead of <see cref="Random"/> so that data sets are a pure function of
/// the seed, independent of the runtime's Random implementation.
/// </summary>
internal sealed class SplitMix64(ulong seed)
{
    private ulong _state = seed;

    public ulong NextUInt64()
    {
        var z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform integer in [minInclusive, maxInclusive] (rejection sampling, no modulo bias).</summary>
    public long NextInclusive(long minInclusive, long maxInclusive)
    {
        var range = (ulong)(maxInclusive - minInclusive) + 1;
        var limit = ulong.MaxValue - ulong.MaxValue % range;
        ulong draw;
        do
            draw = NextUInt64();
        while (draw >= limit);
        return minInclusive + (long)(draw % range);
    }

    /// <summary>Mixes several values into one seed, so (seed, split) pairs give unrelated streams.</summary>
    public static ulong Mix(params ReadOnlySpan<ulong> parts)
    {
        var mixer = new SplitMix64(0x5EED_0F_A517_C4A1UL);
        var state = mixer.NextUInt64();
        foreach (var part in parts)
            state = new SplitMix64(state ^ part).NextUInt64();
        return state;
    }
}
