namespace MetaStone.Reasoning.Scaling;

/// <summary>One observation for a scaling-law fit: total compute (FLOPs) and the accuracy reached with it.</summary>
public readonly record struct ComputePoint(double Compute, double Accuracy);

/// <summary>
/// accuracy = <see cref="A"/> + <see cref="B"/> · ln(compute), fitted by ordinary least squares on
/// <see cref="Points"/> observations; <see cref="RSquared"/> is the share of accuracy variance the line explains
/// (1 for a perfect fit, NaN when every accuracy is the same).
/// </summary>
public sealed record LogLinearFit(double A, double B, double RSquared, int Points, double MinCompute, double MaxCompute)
{
    public double Predict(double compute) => A + B * Math.Log(compute);

    /// <summary>Accuracy gained per doubling of compute (b · ln 2).</summary>
    public double GainPerDoubling => B * Math.Log(2);

    /// <exception cref="ArgumentException">Fewer than two points, a non-positive or non-finite compute, or all computes equal.</exception>
    public static LogLinearFit Fit(IReadOnlyList<ComputePoint> points)
    {
        ArgumentNullException.ThrowIfNull(points);
        if (points.Count < 2) throw new ArgumentException($"a scaling-law fit needs at least 2 points, got {points.Count}", nameof(points));
        foreach (var p in points)
        {
            if (!(p.Compute > 0) || double.IsInfinity(p.Compute))
                throw new ArgumentException($"compute must be a positive finite number of FLOPs, got {p.Compute}", nameof(points));
            if (!double.IsFinite(p.Accuracy)) throw new ArgumentException($"accuracy must be finite, got {p.Accuracy}", nameof(points));
        }
        int n = points.Count;
        double meanX = points.Average(p => Math.Log(p.Compute));
        double meanY = points.Average(p => p.Accuracy);
        double sxx = 0, sxy = 0, syy = 0;
        foreach (var p in points)
        {
            double dx = Math.Log(p.Compute) - meanX, dy = p.Accuracy - meanY;
            sxx += dx * dx;
            sxy += dx * dy;
            syy += dy * dy;
        }
        // Relative test: computes that differ only by rounding are one point on the x axis.
        if (sxx <= 1e-12 * Math.Max(1, meanX * meanX))
            throw new ArgumentException("every point has the same compute: a slope cannot be fitted (sweep more than one k or budget)", nameof(points));
        double b = sxy / sxx;
        double a = meanY - b * meanX;
        double ssRes = 0;
        foreach (var p in points)
        {
            double r = p.Accuracy - (a + b * Math.Log(p.Compute));
            ssRes += r * r;
        }
        double r2 = syy == 0 ? double.NaN : 1 - ssRes / syy;
        return new LogLinearFit(a, b, r2, n, points.Min(p => p.Compute), points.Max(p => p.Compute));
    }
}
