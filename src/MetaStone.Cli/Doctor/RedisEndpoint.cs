using System.Globalization;

namespace MetaStone.Cli.Doctor;

/// <summary>A Redis <c>host:port</c> as given to <c>--redis</c>.</summary>
public sealed record RedisEndpoint(string Host, int Port)
{
    public static RedisEndpoint Default { get; } = new("127.0.0.1", 6379);

    public static bool TryParse(string? text, out RedisEndpoint endpoint)
    {
        endpoint = Default;
        if (string.IsNullOrWhiteSpace(text))
            return false;
        // LastIndexOf so that a bare "host" is rejected but "[::1]:6379" style brackets still split at the port.
        var colon = text.LastIndexOf(':');
        if (colon <= 0 || colon == text.Length - 1)
            return false;
        if (!int.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535)
            return false;
        endpoint = new RedisEndpoint(text[..colon].Trim('[', ']'), port);
        return true;
    }

    public override string ToString() => Host.Contains(':') ? $"[{Host}]:{Port}" : $"{Host}:{Port}";
}
