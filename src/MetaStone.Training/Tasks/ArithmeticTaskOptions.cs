namespace MetaStone.Training.Tasks;

/// <summary>
/// Difficulty knobs of <see cref="ArithmeticChainTask"/>. The defaults keep the task learnable by a ~1–3M-parameter
/// model: additive operands have 2–3 digits, multipliers are small, and every running value stays below
/// <see cref="MaxAbsValue"/> in magnitude (at most 6 digits).
/// </summary>
public sealed record ArithmeticTaskOptions
{
    /// <summary>Fewest operations in a chain (inclusive).</summary>
    public int MinOps { get; init; } = 2;

    /// <summary>Most operations in a chain (inclusive). The count is drawn uniformly per problem, mixing difficulty.</summary>
    public int MaxOps { get; init; } = 5;

    /// <summary>Smallest start value and '+'/'-' operand (inclusive).</summary>
    public long MinOperand { get; init; } = 10;

    /// <summary>Largest start value and '+'/'-' operand (inclusive).</summary>
    public long MaxOperand { get; init; } = 199;

    /// <summary>Smallest '*' operand (inclusive).</summary>
    public long MinMultiplier { get; init; } = 2;

    /// <summary>Largest '*' operand (inclusive); small so a multiplication step is one memorisable table lookup plus carries.</summary>
    public long MaxMultiplier { get; init; } = 9;

    /// <summary>Every running value v satisfies |v| &lt; MaxAbsValue; an operation that would break this is re-drawn.</summary>
    public long MaxAbsValue { get; init; } = 10_000;

    /// <summary>Throws when the options cannot produce a problem.</summary>
    public void Validate()
    {
        if (MinOps < 1 || MaxOps < MinOps)
            throw new ArgumentException($"Need 1 <= MinOps <= MaxOps, got {MinOps}..{MaxOps}.");
        if (MinOperand < 0 || MaxOperand < MinOperand)
            throw new ArgumentException($"Need 0 <= MinOperand <= MaxOperand, got {MinOperand}..{MaxOperand}.");
        if (MinMultiplier < 0 || MaxMultiplier < MinMultiplier)
            throw new ArgumentException($"Need 0 <= MinMultiplier <= MaxMultiplier, got {MinMultiplier}..{MaxMultiplier}.");
        if (MaxOperand >= MaxAbsValue)
            throw new ArgumentException($"MaxAbsValue ({MaxAbsValue}) must exceed MaxOperand ({MaxOperand}).");
    }
}
