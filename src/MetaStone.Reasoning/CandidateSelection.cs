namespace MetaStone.Reasoning;

/// <summary>How the winner among k finished candidates is chosen.</summary>
public enum SelectionMethod
{
    /// <summary>Highest trajectory score; ties within <see cref="CandidateSelection.ScoreTieTolerance"/> go to the first
    /// index (the reference's <c>list.index(max)</c> / argmax, made robust to float noise).</summary>
    SprmBestOfN,
    /// <summary>Most frequent final answer; ties broken by the earliest candidate holding it.</summary>
    MajorityVote,
    /// <summary>Answer with the largest sum of trajectory scores; ties broken by earliest candidate.</summary>
    SprmWeightedVote,
}

/// <summary>One finished candidate as selection sees it.</summary>
/// <param name="Index">Candidate index within the job (0-based).</param>
/// <param name="Score">Trajectory score (aggregated step scores).</param>
/// <param name="Answer">Extracted final answer, or null when the candidate gave none.</param>
public readonly record struct ScoredCandidate(int Index, double Score, string? Answer);

public static class CandidateSelection
{
    /// <summary>
    /// Scores (in [0, 1]) closer than this to the top are a tie, won by the lowest index. fp32 step logits carry about
    /// seven significant digits and the order of floating-point sums can change with the batch a candidate ran in, so
    /// differences below 1e-6 are noise, not evidence: without the tolerance a difference of 1e-15 picked the winner.
    /// The same holds for the summed weights of <see cref="SelectionMethod.SprmWeightedVote"/>.
    /// </summary>
    public const double ScoreTieTolerance = 1e-6;

    /// <summary>
    /// Returns the position in <paramref name="candidates"/> of the winner. Candidates without an answer
    /// take no part in votes; if none has one, the votes fall back to SPRM Best-of-N.
    /// </summary>
    public static int SelectWinner(IReadOnlyList<ScoredCandidate> candidates, SelectionMethod method = SelectionMethod.SprmBestOfN)
    {
        if (candidates.Count == 0) throw new ArgumentException("no candidates to select from", nameof(candidates));
        switch (method)
        {
            case SelectionMethod.SprmBestOfN:
                return BestOfN(candidates);
            case SelectionMethod.MajorityVote:
            case SelectionMethod.SprmWeightedVote:
                var tally = new Dictionary<string, (double Weight, int First)>();
                for (int i = 0; i < candidates.Count; i++)
                {
                    var answer = candidates[i].Answer;
                    if (answer is null) continue;
                    double w = method == SelectionMethod.MajorityVote ? 1.0 : candidates[i].Score;
                    tally[answer] = tally.TryGetValue(answer, out var t) ? (t.Weight + w, t.First) : (w, i);
                }
                if (tally.Count == 0) return BestOfN(candidates);
                double top = tally.Values.Max(v => v.Weight);
                var best = tally.Values.Where(v => v.Weight >= top - ScoreTieTolerance).MinBy(v => v.First);
                // Within the winning answer, return its best-scored candidate so the shown trajectory is the
                // most trusted one that reached that answer.
                string winningAnswer = candidates[best.First].Answer!;
                return FirstWithinTolerance(candidates, i => candidates[i].Answer == winningAnswer);
            default:
                throw new ArgumentOutOfRangeException(nameof(method), method, "unknown selection method");
        }
    }

    private static int BestOfN(IReadOnlyList<ScoredCandidate> candidates) => FirstWithinTolerance(candidates, _ => true);

    /// <summary>Among the eligible positions, the first whose score is within <see cref="ScoreTieTolerance"/> of their
    /// maximum. Positions are expected in candidate-index order.</summary>
    private static int FirstWithinTolerance(IReadOnlyList<ScoredCandidate> candidates, Func<int, bool> eligible)
    {
        double top = double.NegativeInfinity;
        for (int i = 0; i < candidates.Count; i++)
            if (eligible(i) && candidates[i].Score > top) top = candidates[i].Score;
        for (int i = 0; i < candidates.Count; i++)
            if (eligible(i) && candidates[i].Score >= top - ScoreTieTolerance) return i;
        return 0; // only NaN scores: the first candidate, as argmax would
    }
}
