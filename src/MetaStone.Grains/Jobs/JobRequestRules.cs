using MetaStone.Contracts;
using MetaStone.Reasoning;

namespace MetaStone.Grains.Jobs;

/// <summary>Checks a request before anything is accepted; every problem is an <see cref="ArgumentException"/> naming it.</summary>
public static class JobRequestRules
{
    /// <summary>Returns the candidate count k and the selection method of a valid request.</summary>
    public static (int K, SelectionMethod Selection) Validate(JobRequest request)
    {
        if (string.IsNullOrWhiteSpace(request.Prompt)) throw new ArgumentException("the prompt is empty");
        int k;
        try { k = EffortMode.ResolveK(request.Effort, request.K); }
        catch (ArgumentOutOfRangeException) { throw new ArgumentException($"k = {request.K} is out of range: k must be between {EffortMode.MinK} and {EffortMode.MaxK}"); }
        catch (ArgumentException) { throw new ArgumentException($"unknown effort '{request.Effort}' (valid: low, medium, high)"); }
        var selection = CandidateSelection.Parse(request.Selection);
        if (request.MaxNewTokens < 1) throw new ArgumentException($"max new tokens must be at least 1 (got {request.MaxNewTokens})");
        if (request.ThinkingBudget is < 0) throw new ArgumentException($"the thinking budget must be ≥ 0 tokens (got {request.ThinkingBudget})");
        if (!(request.Temperature >= 0) || double.IsInfinity(request.Temperature)) throw new ArgumentException($"temperature must be a finite number ≥ 0 (got {request.Temperature})");
        if (!(request.TopP > 0 && request.TopP <= 1)) throw new ArgumentException($"top-p must be in (0, 1] (got {request.TopP})");
        if (!(request.RepetitionPenalty > 0) || double.IsInfinity(request.RepetitionPenalty)) throw new ArgumentException($"repetition penalty must be > 0 (got {request.RepetitionPenalty})");
        return (k, selection);
    }

    public static string SelectionName(SelectionMethod method) => method switch
    {
        SelectionMethod.SprmBestOfN => "bon",
        SelectionMethod.MajorityVote => "majority",
        SelectionMethod.SprmWeightedVote => "weighted",
        _ => method.ToString(),
    };
}
