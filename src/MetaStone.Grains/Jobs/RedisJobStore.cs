using System.Globalization;
using MetaStone.Contracts;
using StackExchange.Redis;

namespace MetaStone.Grains.Jobs;

/// <summary>
/// Jobs in Redis. Key layout (prefix <c>metastone:{serviceId}:</c>):
/// <list type="bullet">
/// <item><c>job:{id}</c> hash: <c>request</c> (JSON), <c>k</c>, <c>state</c>, <c>error</c>, <c>createdAt</c>, <c>runs</c>, <c>result</c> (JSON, once completed)</item>
/// <item><c>job:{id}:candidates</c> hash: candidate index → candidate result JSON, written as each candidate finishes</item>
/// <item><c>job:{id}:lease</c> string with a TTL: the silo whose coordinator runs the job; gone = nobody does</item>
/// <item><c>jobs:running</c> set of job ids accepted and not yet ended (what the recovery sweep scans)</item>
/// <item><c>stats</c> hash: <c>candidatesGenerated</c>, engine generations recorded by replicas; <c>rejectedBusy</c>,
/// submissions refused at the running-job limit</item>
/// </list>
/// Ended jobs expire after the retention period (default 7 days); running jobs never expire.
/// </summary>
/// <remarks>Every operation rides out a Redis outage of up to the policy's tolerance (<see cref="RedisOutagePolicy"/>).</remarks>
public sealed class RedisJobStore(IConnectionMultiplexer redis, string serviceId, TimeSpan retention, RedisOutagePolicy? outage = null) : IJobStore
{
    private readonly string _prefix = $"metastone:{serviceId}:";
    private readonly RedisOutagePolicy _outage = outage ?? new RedisOutagePolicy(RedisOutagePolicy.DefaultTolerance);
    private IDatabase Db => redis.GetDatabase();

    public string JobKey(string id) => $"{_prefix}job:{id}";
    public string CandidatesKey(string id) => $"{_prefix}job:{id}:candidates";
    public string LeaseKey(string id) => $"{_prefix}job:{id}:lease";
    public string RunningKey => $"{_prefix}jobs:running";
    public string StatsKey => $"{_prefix}stats";
    public TimeSpan Retention => retention;

    // One script, so the admission check, the job record and its entry in jobs:running are atomic: the limit
    // cannot be overshot by concurrent submits on several silos, and a refused job leaves nothing behind.
    private const string CreateScript = """
        if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
        local limit = tonumber(ARGV[1])
        if limit > 0 and redis.call('SCARD', KEYS[2]) >= limit then
          redis.call('HINCRBY', KEYS[3], 'rejectedBusy', 1)
          return 2
        end
        redis.call('HSET', KEYS[1], 'request', ARGV[2], 'k', ARGV[3], 'state', ARGV[4], 'createdAt', ARGV[5], 'runs', 0)
        redis.call('SADD', KEYS[2], ARGV[6])
        return 1
        """;

    public async Task<CreateOutcome> CreateAsync(string jobId, JobRequest request, int k, DateTimeOffset createdAt, int maxRunning = 0)
    {
        var answer = (int)await _outage.RunAsync($"accepting job {jobId}", () => Db.ScriptEvaluateAsync(CreateScript,
            [JobKey(jobId), RunningKey, StatsKey],
            [maxRunning, JobJson.Write(request), k, JobState.Running.ToString(), createdAt.ToUnixTimeMilliseconds(), jobId]));
        return answer switch { 1 => CreateOutcome.Created, 2 => CreateOutcome.Busy, _ => CreateOutcome.Exists };
    }

    public async Task<long> RejectedBusyAsync()
    {
        var value = await _outage.RunAsync("reading statistics", () => Db.HashGetAsync(StatsKey, "rejectedBusy"));
        return value.IsNullOrEmpty ? 0 : (long)value;
    }

    public async Task<StoredJob?> LoadAsync(string jobId)
    {
        var fields = (await _outage.RunAsync($"loading job {jobId}", () => Db.HashGetAllAsync(JobKey(jobId)))).ToDictionary(e => e.Name.ToString(), e => e.Value);
        if (fields.Count == 0) return null;
        var candidates = await _outage.RunAsync($"loading job {jobId}", () => Db.HashGetAllAsync(CandidatesKey(jobId)));
        return new StoredJob
        {
            JobId = jobId,
            Request = JobJson.Read<JobRequest>(fields["request"]!),
            K = (int)fields["k"],
            State = Enum.Parse<JobState>(fields["state"]!),
            Error = fields.TryGetValue("error", out var e) ? (string?)e : null,
            CreatedAt = DateTimeOffset.FromUnixTimeMilliseconds((long)fields["createdAt"]),
            Runs = fields.TryGetValue("runs", out var r) ? (int)r : 0,
            Result = fields.TryGetValue("result", out var result) ? JobJson.Read<JobResult>(result!) : null,
            Candidates = candidates.ToDictionary(c => int.Parse(c.Name.ToString(), CultureInfo.InvariantCulture), c => JobJson.Read<CandidateResult>(c.Value!)),
        };
    }

    public async Task<int> StartRunAsync(string jobId) =>
        (int)await _outage.RunAsync($"starting job {jobId}", () => Db.HashIncrementAsync(JobKey(jobId), "runs"));

    public Task SaveCandidateAsync(string jobId, CandidateResult candidate) =>
        _outage.RunAsync($"storing candidate {candidate.Index} of job {jobId}",
            () => Db.HashSetAsync(CandidatesKey(jobId), candidate.Index.ToString(CultureInfo.InvariantCulture), JobJson.Write(candidate)));

    public Task RecordGeneratedAsync(string jobId, CandidateResult candidate) =>
        _outage.RunAsync($"storing candidate {candidate.Index} of job {jobId}", () =>
        {
            var tx = Db.CreateTransaction();
            _ = tx.HashSetAsync(CandidatesKey(jobId), candidate.Index.ToString(CultureInfo.InvariantCulture), JobJson.Write(candidate));
            _ = tx.HashIncrementAsync(StatsKey, "candidatesGenerated");
            return tx.ExecuteAsync();
        });

    public async Task<CandidateResult?> LoadCandidateAsync(string jobId, int index)
    {
        var value = await _outage.RunAsync($"loading candidate {index} of job {jobId}", () => Db.HashGetAsync(CandidatesKey(jobId), index.ToString(CultureInfo.InvariantCulture)));
        return value.IsNullOrEmpty ? null : JobJson.Read<CandidateResult>(value!);
    }

    public async Task<long> GeneratedCandidatesAsync()
    {
        var value = await _outage.RunAsync("reading statistics", () => Db.HashGetAsync(StatsKey, "candidatesGenerated"));
        return value.IsNullOrEmpty ? 0 : (long)value;
    }

    public Task CompleteAsync(JobResult result) =>
        _outage.RunAsync($"recording the result of job {result.JobId}", () =>
        {
            var tx = Db.CreateTransaction();
            _ = tx.HashSetAsync(JobKey(result.JobId), [new("state", JobState.Completed.ToString()), new("result", JobJson.Write(result))]);
            return EndTransaction(tx, result.JobId);
        });

    public Task EndAsync(string jobId, JobState state, string error) =>
        _outage.RunAsync($"recording the end of job {jobId}", () =>
        {
            var tx = Db.CreateTransaction();
            _ = tx.HashSetAsync(JobKey(jobId), [new("state", state.ToString()), new("error", error)]);
            return EndTransaction(tx, jobId);
        });

    private Task<bool> EndTransaction(ITransaction tx, string jobId)
    {
        _ = tx.SetRemoveAsync(RunningKey, jobId);
        _ = tx.KeyExpireAsync(JobKey(jobId), retention);
        _ = tx.KeyExpireAsync(CandidatesKey(jobId), retention);
        _ = tx.KeyDeleteAsync(LeaseKey(jobId));
        return tx.ExecuteAsync();
    }

    public async Task<IReadOnlyList<string>> RunningJobsAsync() =>
        (await _outage.RunAsync("listing running jobs", () => Db.SetMembersAsync(RunningKey))).Select(v => v.ToString()).ToList();

    public Task RenewLeaseAsync(string jobId, string owner, TimeSpan ttl) =>
        _outage.RunAsync($"renewing the lease of job {jobId}", () => Db.StringSetAsync(LeaseKey(jobId), owner, ttl));

    public Task<bool> HasLeaseAsync(string jobId) => _outage.RunAsync($"checking the lease of job {jobId}", () => Db.KeyExistsAsync(LeaseKey(jobId)));
}
