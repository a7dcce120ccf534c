using System.Reflection;
using System.Text.Json.Serialization;

namespace MetaStone.Contracts;

// The closed choices of the request contract. Each value has one spelling, the lower-case word users type and every JSON
// document shows (CLI --json, the HTTP gateway, persisted records): [JsonStringEnumMemberName] gives it to System.Text.Json
// under any options (also a JsonStringEnumConverter with a naming policy), and RequestText reads the same attribute, so
// text and JSON cannot drift apart.

/// <summary>How hard to think: the number of candidates k when the request gives no explicit k.</summary>
[GenerateSerializer, Alias("metastone.ReasoningEffort")]
[JsonConverter(typeof(JsonStringEnumConverter<ReasoningEffort>))]
public enum ReasoningEffort
{
    /// <summary>k = 2.</summary>
    [JsonStringEnumMemberName("low")] Low,
    /// <summary>k = 8 (the default).</summary>
    [JsonStringEnumMemberName("medium")] Medium,
    /// <summary>k = 32.</summary>
    [JsonStringEnumMemberName("high")] High,
}

/// <summary>How the winner among a job's candidates is chosen.</summary>
[GenerateSerializer, Alias("metastone.WinnerSelection")]
[JsonConverter(typeof(JsonStringEnumConverter<WinnerSelection>))]
public enum WinnerSelection
{
    /// <summary>SPRM Best-of-N: the highest trajectory score (the default).</summary>
    [JsonStringEnumMemberName("bon")] BestOfN,
    /// <summary>The most frequent final answer.</summary>
    [JsonStringEnumMemberName("majority")] Majority,
    /// <summary>The answer with the largest sum of trajectory scores.</summary>
    [JsonStringEnumMemberName("weighted")] Weighted,
}

/// <summary>Why a candidate trajectory ended.</summary>
[GenerateSerializer, Alias("metastone.CandidateFinishReason")]
[JsonConverter(typeof(JsonStringEnumConverter<CandidateFinishReason>))]
public enum CandidateFinishReason
{
    /// <summary>An end-of-sequence or stop token was generated.</summary>
    [JsonStringEnumMemberName("stop")] Stop,
    /// <summary>The token limit or the context window was reached.</summary>
    [JsonStringEnumMemberName("length")] Length,
    [JsonStringEnumMemberName("cancelled")] Cancelled,
}

/// <summary>
/// The text form of the request choices: <c>Name()</c> gives a value's one spelling, the <c>Parse…</c> methods read what a
/// user typed (CLI options, the gateway's <c>reasoning_effort</c> and <c>metastone.selection</c>) case-insensitively, and
/// refuse anything else with an <see cref="ArgumentException"/> that lists the valid words.
/// </summary>
public static class RequestText
{
    public static string Name(this ReasoningEffort effort) => Spellings<ReasoningEffort>.Of(effort);
    public static string Name(this WinnerSelection selection) => Spellings<WinnerSelection>.Of(selection);
    public static string Name(this CandidateFinishReason reason) => Spellings<CandidateFinishReason>.Of(reason);

    public static ReasoningEffort ParseEffort(string text) =>
        Spellings<ReasoningEffort>.Find(text) ?? throw new ArgumentException($"unknown effort '{text}' (valid: {Spellings<ReasoningEffort>.List})");

    /// <summary>Besides bon / majority / weighted, the longer names the selection methods have had (best-of-n, vote, weighted-vote, …).</summary>
    public static WinnerSelection ParseSelection(string text) =>
        Spellings<WinnerSelection>.Find(text)
        ?? (text.Trim().ToLowerInvariant() switch
        {
            "best-of-n" or "sprm" or "sprm-best-of-n" => WinnerSelection.BestOfN,
            "majority-vote" or "vote" => WinnerSelection.Majority,
            "weighted-vote" or "sprm-weighted-vote" => WinnerSelection.Weighted,
            _ => (WinnerSelection?)null,
        })
        ?? throw new ArgumentException($"unknown selection method '{text}' (valid: {Spellings<WinnerSelection>.List})");

    public static CandidateFinishReason ParseFinishReason(string text) =>
        Spellings<CandidateFinishReason>.Find(text) ?? throw new ArgumentException($"unknown finish reason '{text}' (valid: {Spellings<CandidateFinishReason>.List})");

    /// <summary>The spellings of a choice enum, read once from its [JsonStringEnumMemberName] attributes.</summary>
    private static class Spellings<T> where T : struct, Enum
    {
        private static readonly (T Value, string Name)[] All = Enum.GetValues<T>()
            .Select(v => (v, typeof(T).GetField(v.ToString())!.GetCustomAttribute<JsonStringEnumMemberNameAttribute>()?.Name
                ?? throw new InvalidOperationException($"{typeof(T).Name}.{v} has no [JsonStringEnumMemberName]")))
            .ToArray();

        public static readonly string List = string.Join(", ", All.Select(a => a.Name));

        // An undefined value (a number cast to the enum, or read as a number from JSON) has no spelling: its number is
        // shown, and the request rules refuse it.
        public static string Of(T value)
        {
            foreach (var (v, name) in All)
                if (EqualityComparer<T>.Default.Equals(v, value)) return name;
            return value.ToString();
        }

        public static T? Find(string text)
        {
            string key = text.Trim();
            foreach (var (v, name) in All)
                if (string.Equals(name, key, StringComparison.OrdinalIgnoreCase)) return v;
            return null;
        }
    }
}
