using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using MetaStone.Contracts;

namespace MetaStone.Grains.Durability;

/// <summary>The JSON form of persisted records (grain state in Redis or files): camelCase, readable with redis-cli.</summary>
public static class JobJson
{
    public static JsonSerializerOptions Options { get; } = CreateOptions(readFlatSampling: true);

    /// <summary>The record format; <paramref name="readFlatSampling"/> adds the reader of requests persisted before the
    /// sampling record (<see cref="FlatSamplingJobRequestReader"/>, which itself uses the options without it).</summary>
    internal static JsonSerializerOptions CreateOptions(bool readFlatSampling)
    {
        var options = new JsonSerializerOptions
        {
            PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
            Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
            NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        };
        if (readFlatSampling) options.Converters.Add(new FlatSamplingJobRequestReader());
        return options;
    }

    public static string Write<T>(T value) => JsonSerializer.Serialize(value, Options);
    public static T Read<T>(string json) => JsonSerializer.Deserialize<T>(json, Options) ?? throw new InvalidDataException($"stored {typeof(T).Name} is null");
}

/// <summary>
/// Grain state as <see cref="JobJson"/> text instead of Orleans' binary format, so an operator can read a job's record with
/// redis-cli or a sweep's file with a text editor.
/// </summary>
public sealed class JsonGrainStateSerializer : Orleans.Storage.IGrainStorageSerializer
{
    public BinaryData Serialize<T>(T? input) => BinaryData.FromBytes(JsonSerializer.SerializeToUtf8Bytes(input, JobJson.Options));

    public T Deserialize<T>(BinaryData input) =>
        JsonSerializer.Deserialize<T>(input.ToMemory().Span, JobJson.Options) ?? throw new InvalidDataException($"stored {typeof(T).Name} is null");
}

/// <summary>
/// Reads job requests persisted before the request contract had one sampling record: their sampling fields
/// (<c>maxNewTokens</c>, <c>thinkingBudget</c>, <c>temperature</c>, <c>topP</c>, <c>repetitionPenalty</c>) sat directly in the
/// request. A job accepted before an upgrade and resumed after it must regenerate with its own settings, not the defaults
/// (which is what ignoring the unknown flat fields would silently do). Writing is unchanged: one nested <c>sampling</c> object.
/// </summary>
internal sealed class FlatSamplingJobRequestReader : JsonConverter<JobRequest>
{
    private static readonly string[] FlatSamplingFields = ["maxNewTokens", "thinkingBudget", "temperature", "topP", "repetitionPenalty"];

    // The same options without this converter, so the nested read and every write take the ordinary path.
    private static readonly JsonSerializerOptions Plain = JobJson.CreateOptions(readFlatSampling: false);

    public override JobRequest? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (JsonNode.Parse(ref reader) is not JsonObject request) throw new JsonException("a stored job request is not a JSON object");
        if (!request.ContainsKey("sampling"))
        {
            var sampling = new JsonObject();
            foreach (string field in FlatSamplingFields)
                if (request.Remove(field, out var value)) sampling[field] = value;
            if (sampling.Count > 0) request["sampling"] = sampling;
        }
        return request.Deserialize<JobRequest>(Plain);
    }

    public override void Write(Utf8JsonWriter writer, JobRequest value, JsonSerializerOptions options) =>
        JsonSerializer.Serialize(writer, value, Plain);
}
