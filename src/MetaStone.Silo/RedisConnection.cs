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
        options.ConnectTimeout = (int)(timeout ?? TimeSpan.FromSeconds(5)).TotalMilliseconds;
        options.ConnectRetry = 1;
        try { return await ConnectionMultiplexer.ConnectAsync(options); }
        catch (RedisConnectionException e)
        {
            throw new InvalidOperationException($"cannot reach Redis at '{connectionString}': {e.Message.Split('\n')[0]} (is redis-server running?)", e);
        }
    }
}
