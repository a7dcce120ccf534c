using MetaStone.Contracts;
using MetaStone.Model.Generation;
using MetaStone.Reasoning;

namespace MetaStone.Grains.Jobs;

/// <summary>
/// The one translation between the request contract (Orleans-serializable, in MetaStone.Contracts) and the libraries that
/// know nothing of it: the model's <see cref="SamplingOptions"/> and finish reasons, the reasoning library's selection
/// methods. The replicas' engines and <c>metastone generate</c> both go through it.
/// </summary>
public static class ModelMapping
{
    public static SamplingOptions ToSamplingOptions(SamplingSettings sampling) => new()
    {
        MaxNewTokens = sampling.MaxNewTokens,
        ThinkingBudget = sampling.ThinkingBudget,
        Temperature = sampling.Temperature,
        TopP = sampling.TopP,
        RepetitionPenalty = sampling.RepetitionPenalty,
    };

    public static SelectionMethod ToSelectionMethod(WinnerSelection selection) => selection switch
    {
        WinnerSelection.BestOfN => SelectionMethod.SprmBestOfN,
        WinnerSelection.Majority => SelectionMethod.MajorityVote,
        WinnerSelection.Weighted => SelectionMethod.SprmWeightedVote,
        _ => throw new ArgumentOutOfRangeException(nameof(selection), selection, "unknown selection"),
    };

    public static WinnerSelection ToWinnerSelection(SelectionMethod method) => method switch
    {
        SelectionMethod.SprmBestOfN => WinnerSelection.BestOfN,
        SelectionMethod.MajorityVote => WinnerSelection.Majority,
        SelectionMethod.SprmWeightedVote => WinnerSelection.Weighted,
        _ => throw new ArgumentOutOfRangeException(nameof(method), method, "unknown selection method"),
    };

    public static CandidateFinishReason ToFinishReason(FinishReason reason) => reason switch
    {
        FinishReason.Stop => CandidateFinishReason.Stop,
        FinishReason.Length => CandidateFinishReason.Length,
        FinishReason.Cancelled => CandidateFinishReason.Cancelled,
        _ => throw new ArgumentOutOfRangeException(nameof(reason), reason, "unknown finish reason"),
    };
}
