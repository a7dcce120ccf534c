namespace MetaStone.Contracts;

/// <summary>
/// How each candidate of a job is sampled: the one sampling record of the request contract. Jobs and sweeps carry it
/// (a sweep's items take its thinking budget from the sweep's budget list), every CLI verb reads it from one option set,
/// and the grains turn it into the model library's sampling options in one place (<c>MetaStone.Grains.Jobs.ModelMapping.ToSamplingOptions</c>).
/// Checked by <c>JobRequestRules.ValidateSampling</c>.
/// </summary>
[GenerateSerializer, Immutable, Alias("metastone.SamplingSettings")]
public sealed record SamplingSettings
{
    /// <summary>Limit on generated tokens per candidate (thinking + answer).</summary>
    [Id(0)] public int MaxNewTokens { get; init; } = SamplingDefaults.MaxNewTokens;
    /// <summary>Limit on tokens inside the thinking span, then <c>&lt;/think&gt;</c> is forced; null = only <see cref="MaxNewTokens"/>.</summary>
    [Id(1)] public int? ThinkingBudget { get; init; }
    /// <summary>0 means greedy.</summary>
    [Id(2)] public double Temperature { get; init; } = SamplingDefaults.Temperature;
    [Id(3)] public double TopP { get; init; } = SamplingDefaults.TopP;
    /// <summary>HF-style; 1 is off.</summary>
    [Id(4)] public double RepetitionPenalty { get; init; } = SamplingDefaults.RepetitionPenalty;
}
