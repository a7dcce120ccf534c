using System.Text.RegularExpressions;

namespace MetaStone.Deploy.Tests;

/// <summary>
/// Compose variable interpolation (<c>${VAR}</c>, <c>${VAR:-default}</c>, <c>${VAR-default}</c>, <c>$VAR</c>, <c>$$</c>)
/// against an explicit variable set, so the checks see what `docker compose` would run with no .env file.
/// </summary>
internal static partial class Interpolation
{
    [GeneratedRegex(@"\$\$|\$\{(?<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?<op>:?-)(?<default>[^}]*))?\}|\$(?<bare>[A-Za-z_][A-Za-z0-9_]*)")]
    private static partial Regex Pattern();

    /// <summary>Resolves <paramref name="text"/>; variables absent from <paramref name="variables"/> are unset.</summary>
    public static string Resolve(string text, IReadOnlyDictionary<string, string> variables) =>
        Pattern().Replace(text, match =>
        {
            if (match.Value == "$$") return "$";
            if (match.Groups["bare"].Success)
                return variables.GetValueOrDefault(match.Groups["bare"].Value, "");
            var name = match.Groups["name"].Value;
            var has = variables.TryGetValue(name, out var value);
            if (!match.Groups["op"].Success) return value ?? "";
            // ":-" also replaces an empty value, "-" only an unset one (compose semantics).
            var useDefault = match.Groups["op"].Value == ":-" ? string.IsNullOrEmpty(value) : !has;
            return useDefault ? match.Groups["default"].Value : value!;
        });

    /// <summary>Names of variables used without a default (the file would not work without a .env).</summary>
    public static IEnumerable<string> VariablesWithoutDefault(string text)
    {
        foreach (Match match in Pattern().Matches(text))
        {
            if (match.Value == "$$") continue;
            if (match.Groups["bare"].Success) yield return match.Groups["bare"].Value;
            else if (!match.Groups["op"].Success) yield return match.Groups["name"].Value;
        }
    }

    public static readonly IReadOnlyDictionary<string, string> NoVariables = new Dictionary<string, string>();

    /// <summary>The distinct <c>METASTONE_*</c> (or other) variable names referenced in <paramref name="text"/>.</summary>
    public static IReadOnlySet<string> Names(string text)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (Match match in Pattern().Matches(text))
        {
            if (match.Groups["bare"].Success) names.Add(match.Groups["bare"].Value);
            else if (match.Groups["name"].Success) names.Add(match.Groups["name"].Value);
        }
        return names;
    }
}
