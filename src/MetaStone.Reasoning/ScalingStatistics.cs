namespace MetaStone.Reasoning;

/// <summary>One sampled candidate of one problem, as the evaluation sees it.</summary>
/// <param name="Steps">Reasoning steps the SPRM head scored in it (what the head's compute is counted by).</param>
public readonly record struct GradedCandidate(double Score, string? Answer, bool Correct, int ThinkingTokens = 0, int Steps = 0);

/// <summary>What one group of k candidates scores under every selection method (1 = the chosen answer is correct).</summary>
public readonly record struct GroupOutcome(double SprmBestOfN, double MajorityVote, double SprmWeightedVote, double RandomPick, double OraclePassAtK,
    int ThinkingTokens, int Steps)
{
    public static GroupOutcome Of(IReadOnlyList<GradedCandidate> group)
    {
        if (group.Count == 0) throw new ArgumentException("a group needs at least one candidate", nameof(group));
        var scored = new ScoredCandidate[group.Count];
        for (int i = 0; i < group.Count; i++) scored[i] = new ScoredCandidate(i, group[i].Score, group[i].Answer);
        double Hit(SelectionMethod m) => group[CandidateSelection.SelectWinner(scored, m)].Correct ? 1 : 0;
        int correct = 0, tokens = 0, steps = 0;
        foreach (var c in group)
        {
            if (c.Correct) correct++;
            tokens += c.ThinkingTokens;
            steps += c.Steps;
        }
        return new GroupOutcome(Hit(SelectionMethod.SprmBestOfN), Hit(SelectionMethod.MajorityVote), Hit(SelectionMethod.SprmWeightedVote),
            correct / (double)group.Count, // expected accuracy of a uniform random pick
            correct > 0 ? 1 : 0, tokens, steps);
    }
}

/// <summary>Accuracy of each selection method at one k, averaged over problems and groups.</summary>
public sealed record KAccuracy(int K, double SprmBestOfN, double MajorityVote, double SprmWeightedVote, double RandomPick, double OraclePassAtK, int Groups, double MeanThinkingTokens);

/// <summary>
/// Test-time-scaling statistics from one generation of k_max candidates per problem: every smaller k is
/// estimated by cutting the candidates into ⌊n/k⌋ disjoint groups of k (the released compute_metric.py
/// method) and, when asked, by extra random subsets over several seeds (the search-and-learn method),
/// instead of generating again for every k.
/// </summary>
public static class ScalingStatistics
{
    /// <param name="problems">Candidates of each problem in generation order.</param>
    /// <param name="k">Group size; a problem with fewer than k candidates contributes one group of all it has.</param>
    /// <param name="extraRandomSubsets">Random subsets of size k drawn per problem in addition to the disjoint groups.</param>
    public static KAccuracy AtK(IReadOnlyList<IReadOnlyList<GradedCandidate>> problems, int k, int extraRandomSubsets = 0, int seed = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        var rng = new Random(seed);
        double bon = 0, maj = 0, wv = 0, rnd = 0, oracle = 0, tokens = 0;
        int problemsCounted = 0, groupsTotal = 0;
        foreach (var candidates in problems)
        {
            if (candidates.Count == 0) continue;
            var groups = new List<IReadOnlyList<GradedCandidate>>();
            if (candidates.Count < k) groups.Add(candidates);
            else
                for (int g = 0; g + k <= candidates.Count; g += k)
                    groups.Add(candidates.Skip(g).Take(k).ToList());
            for (int r = 0; r < extraRandomSubsets && candidates.Count > k; r++)
                groups.Add(candidates.OrderBy(_ => rng.Next()).Take(k).ToList());

            double pb = 0, pm = 0, pw = 0, pr = 0, po = 0, pt = 0;
            foreach (var group in groups)
            {
                var outcome = GroupOutcome.Of(group);
                pb += outcome.SprmBestOfN;
                pm += outcome.MajorityVote;
                pw += outcome.SprmWeightedVote;
                pr += outcome.RandomPick;
                po += outcome.OraclePassAtK;
                pt += outcome.ThinkingTokens;
            }
            int n = groups.Count;
            bon += pb / n; maj += pm / n; wv += pw / n; rnd += pr / n; oracle += po / n; tokens += pt / n;
            problemsCounted++;
            groupsTotal += n;
        }
        if (problemsCounted == 0) return new KAccuracy(k, 0, 0, 0, 0, 0, 0, 0);
        return new KAccuracy(k, bon / problemsCounted, maj / problemsCounted, wv / problemsCounted, rnd / problemsCounted,
            oracle / problemsCounted, groupsTotal, tokens / problemsCounted);
    }

    /// <summary>
    /// Area under the ROC curve of scores separating positives from negatives (ties count half): the
    /// probability that a random correct trajectory outscores a random wrong one. NaN with one class only.
    /// </summary>
    public static double Auroc(IReadOnlyList<double> scores, IReadOnlyList<bool> labels)
    {
        if (scores.Count != labels.Count) throw new ArgumentException("scores and labels differ in length");
        var order = Enumerable.Range(0, scores.Count).OrderBy(i => scores[i]).ToArray();
        // Mann–Whitney U with average ranks for ties.
        var ranks = new double[scores.Count];
        for (int i = 0; i < order.Length;)
        {
            int j = i;
            while (j + 1 < order.Length && scores[order[j + 1]] == scores[order[i]]) j++;
            double avg = (i + j) / 2.0 + 1;
            for (int t = i; t <= j; t++) ranks[order[t]] = avg;
            i = j + 1;
        }
        long pos = labels.Count(l => l), neg = labels.Count - pos;
        if (pos == 0 || neg == 0) return double.NaN;
        double rankSum = 0;
        for (int i = 0; i < labels.Count; i++) if (labels[i]) rankSum += ranks[i];
        return (rankSum - pos * (pos + 1) / 2.0) / (pos * (double)neg);
    }
}
