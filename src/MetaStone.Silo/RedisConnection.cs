using StackExchange.Redis;

namespace MetaStone.Silo;

/// <summary>Connects to Redis up front, so "Redis is down" is one clear error instead of a membership-table timeout.</summary>
public static class RedisConnection
{
    public static async Task<ConnectionMultiplexer> ConnectAsync(string connectionString, TimeSpan? timeout = null)
    {
        ConfigurationOptions options;
        try { options = ConfigurationOptions.Parse(connectionString); }
        catch (Exception e) { throw new ArgumentException($"invalid Redis connection string '{connectionString}': {e.Message}"); }
        options.AbortOnConnectFail = true;
        // One attempt of at most 3 s (as the client): the library default retried for about 16 s.
        options.ConnectTimeout = (int)(timeout ?? TimeSpan.FromSeconds(3)).TotalMilliseconds;
        options.ConnectRetry = 1;
        try { return await ConnectionMultiplexer.ConnectAsync(options); }
        catch (RedisConnectionException e)
        {
            // Our own words: the library's first line is advice to programmers ("use abortConnect=false …").
            string reason = e.InnerException is { } inner ? inner.Message.Split('\n')[0].Trim()
                : e.FailureType is ConnectionFailureType.UnableToConnect or ConnectionFailureType.UnableToResolvePhysicalConnection ? "no connection"
                : e.FailureType.ToString();
            throw new InvalidOperationException($"cannot reach Redis at '{connectionString}' ({reason}); is redis-server running there?", e);
        }
    }
}
