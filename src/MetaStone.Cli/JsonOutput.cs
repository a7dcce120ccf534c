using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace MetaStone.Cli;

/// <summary>
/// The shared <c>--json</c> convention: a verb that offers machine-readable output adds <see cref="CreateOption"/>
/// and, when it is set, writes exactly one JSON document to stdout with <see cref="Write{T}"/> (and nothing else,
/// so scripts can pipe it into <c>jq</c>). Property names are camelCase, enums are lowercase strings.
/// </summary>
public static class JsonOutput
{
    public static JsonSerializerOptions SerializerOptions { get; } = new()
    {
        WriteIndented = true,
        // NaN is a legitimate answer (e.g. AUROC with one class); write it rather than crash.
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        // Output goes to terminals and jq, never into HTML: keep '+', '`' and non-ASCII readable.
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
    };

    public static Option<bool> CreateOption() => new("--json")
    {
        Description = "Print machine-readable JSON instead of text.",
    };

    public static void Write<T>(TextWriter output, T value)
    {
        output.WriteLine(JsonSerializer.Serialize(value, SerializerOptions));
    }
}
