namespace MetaStone.Reasoning;

/// <summary>How the winner among k finished candidates is chosen.</summary>
public enum SelectionMethod
{
    /// <summary>Highest trajectory score; first index wins ties (Python list.index(max)).</summary>
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
                var best = tally.Values.OrderByDescending(v => v.Weight).ThenBy(v => v.First).First();
                // Within the winning answer, return its best-scored candidate so the shown trajectory is the
                // most trusted one that reached that answer.
                string winningAnswer = candidates[best.First].Answer!;
                int winner = best.First;
                for (int i = best.First + 1; i < candidates.Count; i++)
                    if (candidates[i].Answer == winningAnswer && candidates[i].Score > candidates[winner].Score) winner = i;
                return winner;
            default:
                throw new ArgumentOutOfRangeException(nameof(method), method, "unknown selection method");
        }
    }

    private static int BestOfN(IReadOnlyList<ScoredCandidate> candidates)
    {
        int best = 0;
        for (int i = 1; i < candidates.Count; i++)
            if (candidates[i].Score > candidates[best].Score) best = i;
        return best;
    }

    public static SelectionMethod Parse(string name) => name.Trim().ToLowerInvariant() switch
    {
        "bon" or "best-of-n" or "sprm" or "sprm-best-of-n" => SelectionMethod.SprmBestOfN,
        "majority" or "majority-vote" or "vote" => SelectionMethod.MajorityVote,
        "weighted" or "weighted-vote" or "sprm-weighted-vote" => SelectionMethod.SprmWeightedVote,
        _ => throw new ArgumentException($"unknown selection method '{name}' (valid: bon, majority, weighted)", nameof(name)),
    };
}
