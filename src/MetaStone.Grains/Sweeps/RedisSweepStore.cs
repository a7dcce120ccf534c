using System.Globalization;
using MetaStone.Contracts;
using MetaStone.Grains.Jobs;
using StackExchange.Redis;

namespace MetaStone.Grains.Sweeps;

/// <summary>
/// Sweeps in Redis. Key layout (prefix <c>metastone:{serviceId}:</c>):
/// <list type="bullet">
/// <item><c>sweep:{id}</c> hash: <c>request</c> (JSON), <c>model</c> (JSON), <c>state</c>, <c>error</c>, <c>createdAt</c>, <c>runs</c></item>
/// <item><c>sweep:{id}:items</c> hash: item index → graded item JSON, written as each item finishes</item>
/// <item><c>sweep:{id}:lease</c> string with a TTL: the silo whose sweep grain runs it</item>
/// <item><c>sweeps:running</c> set of sweeps accepted and not ended (what the recovery sweep scans)</item>
/// </list>
/// Ended sweeps expire after the retention period; the CLI has written their report by then.
/// </summary>
/// <remarks>Every operation rides out a Redis outage of up to the policy's tolerance (<see cref="RedisOutagePolicy"/>).</remarks>
public sealed class RedisSweepStore(IConnectionMultiplexer redis, string serviceId, TimeSpan retention, RedisOutagePolicy? outage = null) : ISweepStore
{
    private readonly string _prefix = $"metastone:{serviceId}:";
    private readonly RedisOutagePolicy _outage = outage ?? new RedisOutagePolicy(RedisOutagePolicy.DefaultTolerance);
    private IDatabase Db => redis.GetDatabase();

    public string SweepKey(string id) => $"{_prefix}sweep:{id}";
    public string ItemsKey(string id) => $"{_prefix}sweep:{id}:items";
    public string LeaseKey(string id) => $"{_prefix}sweep:{id}:lease";
    public string RunningKey => $"{_prefix}sweeps:running";

    public Task<bool> CreateAsync(string sweepId, SweepRequest request, ModelInfo model, DateTimeOffset createdAt) =>
        _outage.RunAsync($"accepting sweep {sweepId}", () => Create(sweepId, request, model, createdAt));

    private async Task<bool> Create(string sweepId, SweepRequest request, ModelInfo model, DateTimeOffset createdAt)
    {
        var tx = Db.CreateTransaction();
        tx.AddCondition(Condition.KeyNotExists(SweepKey(sweepId)));
        _ = tx.HashSetAsync(SweepKey(sweepId),
        [
            new("request", JobJson.Write(request)),
            new("model", JobJson.Write(model)),
            new("state", SweepState.Running.ToString()),
            new("createdAt", createdAt.ToUnixTimeMilliseconds()),
            new("runs", 0),
        ]);
        _ = tx.SetAddAsync(RunningKey, sweepId);
        return await tx.ExecuteAsync();
    }

    public async Task<StoredSweep?> LoadAsync(string sweepId)
    {
        var fields = (await _outage.RunAsync($"loading sweep {sweepId}", () => Db.HashGetAllAsync(SweepKey(sweepId)))).ToDictionary(e => e.Name.ToString(), e => e.Value);
        if (fields.Count == 0) return null;
        var items = await _outage.RunAsync($"loading sweep {sweepId}", () => Db.HashGetAllAsync(ItemsKey(sweepId)));
        return new StoredSweep
        {
            SweepId = sweepId,
            Request = JobJson.Read<SweepRequest>(fields["request"]!),
            Model = JobJson.Read<ModelInfo>(fields["model"]!),
            State = Enum.Parse<SweepState>(fields["state"]!),
            Error = fields.TryGetValue("error", out var e) && !e.IsNullOrEmpty ? (string?)e : null,
            CreatedAt = DateTimeOffset.FromUnixTimeMilliseconds((long)fields["createdAt"]),
            Runs = fields.TryGetValue("runs", out var r) ? (int)r : 0,
            Items = items.ToDictionary(i => int.Parse(i.Name.ToString(), CultureInfo.InvariantCulture), i => JobJson.Read<SweepItemResult>(i.Value!)),
        };
    }

    public Task<int> StartRunAsync(string sweepId) => _outage.RunAsync($"starting sweep {sweepId}", () => StartRun(sweepId));

    private async Task<int> StartRun(string sweepId)
    {
        var tx = Db.CreateTransaction();
        var runs = tx.HashIncrementAsync(SweepKey(sweepId), "runs");
        _ = tx.HashSetAsync(SweepKey(sweepId), [new("state", SweepState.Running.ToString()), new("error", "")]);
        _ = tx.SetAddAsync(RunningKey, sweepId);
        // A restarted sweep must not expire under its own feet.
        _ = tx.KeyPersistAsync(SweepKey(sweepId));
        _ = tx.KeyPersistAsync(ItemsKey(sweepId));
        await tx.ExecuteAsync();
        return (int)await runs;
    }

    public Task SaveItemAsync(string sweepId, SweepItemResult item) =>
        _outage.RunAsync($"storing item {item.Item} of sweep {sweepId}", () => Db.HashSetAsync(ItemsKey(sweepId), item.Item.ToString(CultureInfo.InvariantCulture), JobJson.Write(item)));

    public Task EndAsync(string sweepId, SweepState state, string? error) =>
        _outage.RunAsync($"recording the end of sweep {sweepId}", () => End(sweepId, state, error));

    private async Task End(string sweepId, SweepState state, string? error)
    {
        var tx = Db.CreateTransaction();
        _ = tx.HashSetAsync(SweepKey(sweepId), [new("state", state.ToString()), new("error", error ?? "")]);
        _ = tx.SetRemoveAsync(RunningKey, sweepId);
        _ = tx.KeyExpireAsync(SweepKey(sweepId), retention);
        _ = tx.KeyExpireAsync(ItemsKey(sweepId), retention);
        _ = tx.KeyDeleteAsync(LeaseKey(sweepId));
        await tx.ExecuteAsync();
    }

    public async Task<IReadOnlyList<string>> RunningSweepsAsync() =>
        (await _outage.RunAsync("listing running sweeps", () => Db.SetMembersAsync(RunningKey))).Select(v => v.ToString()).ToList();

    public Task RenewLeaseAsync(string sweepId, string owner, TimeSpan ttl) =>
        _outage.RunAsync($"renewing the lease of sweep {sweepId}", () => Db.StringSetAsync(LeaseKey(sweepId), owner, ttl));

    public Task<bool> HasLeaseAsync(string sweepId) => _outage.RunAsync($"checking the lease of sweep {sweepId}", () => Db.KeyExistsAsync(LeaseKey(sweepId)));
}
