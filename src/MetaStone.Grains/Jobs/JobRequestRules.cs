using MetaStone.Contracts;
using MetaStone.Reasoning;

namespace MetaStone.Grains.Jobs;

/// <summary>
/// The one validator of the request contract (jobs, sweeps through their jobs, the CLI before it starts anything, the HTTP
/// gateway): every problem is an <see cref="ArgumentException"/> naming it.
/// </summary>
public static class JobRequestRules
{
    /// <summary>Returns the candidate count k and the selection method of a valid request.</summary>
    public static (int K, SelectionMethod Selection) Validate(JobRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (string.IsNullOrWhiteSpace(request.Prompt)) throw new ArgumentException("the prompt is empty");
        int k = CandidateCount(request.Effort, request.K);
        if (!Enum.IsDefined(request.Selection))
            throw new ArgumentException($"unknown selection method '{request.Selection.Name()}' (valid: bon, majority, weighted)");
        ValidateSampling(request.Sampling);
        return (k, ModelMapping.ToSelectionMethod(request.Selection));
    }

    /// <summary>Checks the sampling record of a job or a sweep.</summary>
    public static void ValidateSampling(SamplingSettings? sampling)
    {
        if (sampling is null) throw new ArgumentException("the sampling settings are missing");
        if (sampling.MaxNewTokens < 1) throw new ArgumentException($"max new tokens must be at least 1 (got {sampling.MaxNewTokens})");
        if (sampling.ThinkingBudget is < 0) throw new ArgumentException($"the thinking budget must be ≥ 0 tokens (got {sampling.ThinkingBudget})");
        if (!(sampling.Temperature >= 0) || double.IsInfinity(sampling.Temperature)) throw new ArgumentException($"temperature must be a finite number ≥ 0 (got {sampling.Temperature})");
        if (!(sampling.TopP > 0 && sampling.TopP <= 1)) throw new ArgumentException($"top-p must be in (0, 1] (got {sampling.TopP})");
        if (!(sampling.RepetitionPenalty > 0) || double.IsInfinity(sampling.RepetitionPenalty)) throw new ArgumentException($"repetition penalty must be > 0 (got {sampling.RepetitionPenalty})");
    }

    /// <summary>An explicit k (which wins) or the effort's k; medium when neither is given.</summary>
    public static int CandidateCount(ReasoningEffort? effort, int? k)
    {
        if (k is int explicitK)
        {
            if (explicitK < EffortMode.MinK || explicitK > EffortMode.MaxK)
                throw new ArgumentException($"k = {explicitK} is out of range: k must be between {EffortMode.MinK} and {EffortMode.MaxK}");
            return explicitK;
        }
        return (effort ?? ReasoningEffort.Medium) switch
        {
            ReasoningEffort.Low => EffortMode.LowK,
            ReasoningEffort.Medium => EffortMode.MediumK,
            ReasoningEffort.High => EffortMode.HighK,
            var unknown => throw new ArgumentException($"unknown effort '{unknown.Name()}' (valid: low, medium, high)"),
        };
    }
}
