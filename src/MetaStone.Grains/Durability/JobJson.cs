using System.Text.Json;
using System.Text.Json.Serialization;

namespace MetaStone.Grains.Durability;

/// <summary>The JSON form of persisted records (grain state in Redis or files): camelCase, readable with redis-cli.</summary>
public static class JobJson
{
    public static JsonSerializerOptions Options { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

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
