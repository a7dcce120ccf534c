namespace MetaStone.Reasoning;

/// <summary>How the step scores of one trajectory combine into one number.</summary>
public enum ScoreAggregation
{
    /// <summary>exp(mean(log(clamp(p, 1e-10)))), 0 with no steps: the released MetaStone rule.</summary>
    GeometricMean,
    Min,
    Last,
    Mean,
}

/// <summary>Combines step probabilities (sigmoid of the SPRM logits) into a trajectory score.</summary>
public static class TrajectoryScore
{
    /// <summary>Clamp used before the log, as in the reference scorer.</summary>
    public const double LogClamp = 1e-10;

    public static double Aggregate(IReadOnlyList<double> stepScores, ScoreAggregation how = ScoreAggregation.GeometricMean)
    {
        if (stepScores.Count == 0) return 0.0;
        switch (how)
        {
            case ScoreAggregation.GeometricMean:
                double sum = 0;
                foreach (var p in stepScores) sum += Math.Log(Math.Max(p, LogClamp));
                return Math.Exp(sum / stepScores.Count);
            case ScoreAggregation.Min:
                return stepScores.Min();
            case ScoreAggregation.Last:
                return stepScores[^1];
            case ScoreAggregation.Mean:
                return stepScores.Average();
            default:
                throw new ArgumentOutOfRangeException(nameof(how), how, "unknown score aggregation");
        }
    }

    public static double Sigmoid(double logit) => 1.0 / (1.0 + Math.Exp(-logit));

    public static ScoreAggregation Parse(string name) => name.Trim().ToLowerInvariant() switch
    {
        "geomean" or "geometric-mean" or "geometric_mean" or "geometricmean" => ScoreAggregation.GeometricMean,
        "min" => ScoreAggregation.Min,
        "last" => ScoreAggregation.Last,
        "mean" => ScoreAggregation.Mean,
        _ => throw new ArgumentException($"unknown score aggregation '{name}' (valid: geomean, min, last, mean)", nameof(name)),
    };
}
