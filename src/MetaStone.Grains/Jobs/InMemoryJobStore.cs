using System.Collections.Concurrent;
using MetaStone.Contracts;

namespace MetaStone.Grains.Jobs;

/// <summary>Jobs in this process only: the embedded mode of <c>metastone ask</c>, where one process is the whole cluster.</summary>
public sealed class InMemoryJobStore : IJobStore
{
    private readonly ConcurrentDictionary<string, StoredJob> _jobs = new();
    private readonly object _gate = new();

    private readonly object _admission = new();
    private long _rejectedBusy;

    public Task<CreateOutcome> CreateAsync(string jobId, JobRequest request, int k, DateTimeOffset createdAt, int maxRunning = 0)
    {
        lock (_admission)
        {
            if (_jobs.ContainsKey(jobId)) return Task.FromResult(CreateOutcome.Exists);
            if (maxRunning > 0 && _jobs.Values.Count(j => j.State == JobState.Running) >= maxRunning)
            {
                Interlocked.Increment(ref _rejectedBusy);
                return Task.FromResult(CreateOutcome.Busy);
            }
            return Task.FromResult(_jobs.TryAdd(jobId, new StoredJob
            {
                JobId = jobId, Request = request, K = k, State = JobState.Running, CreatedAt = createdAt,
                Candidates = new Dictionary<int, CandidateResult>(),
            }) ? CreateOutcome.Created : CreateOutcome.Exists);
        }
    }

    public Task<long> RejectedBusyAsync() => Task.FromResult(Interlocked.Read(ref _rejectedBusy));

    public Task<StoredJob?> LoadAsync(string jobId) => Task.FromResult(_jobs.TryGetValue(jobId, out var job) ? job : null);

    public Task<int> StartRunAsync(string jobId) => Task.FromResult(Update(jobId, j => j with { Runs = j.Runs + 1 }).Runs);

    public Task SaveCandidateAsync(string jobId, CandidateResult candidate)
    {
        Update(jobId, j => j with { Candidates = new Dictionary<int, CandidateResult>(j.Candidates) { [candidate.Index] = candidate } });
        return Task.CompletedTask;
    }

    private long _generated;

    public Task RecordGeneratedAsync(string jobId, CandidateResult candidate)
    {
        // Jobs only live here once accepted; a candidate of an unknown job is still counted as generated.
        lock (_gate)
        {
            if (_jobs.TryGetValue(jobId, out var job))
                _jobs[jobId] = job with { Candidates = new Dictionary<int, CandidateResult>(job.Candidates) { [candidate.Index] = candidate } };
            _generated++;
        }
        return Task.CompletedTask;
    }

    public Task<CandidateResult?> LoadCandidateAsync(string jobId, int index) =>
        Task.FromResult(_jobs.TryGetValue(jobId, out var job) && job.Candidates.TryGetValue(index, out var c) ? c : null);

    public Task<long> GeneratedCandidatesAsync() => Task.FromResult(Interlocked.Read(ref _generated));

    public Task CompleteAsync(JobResult result)
    {
        Update(result.JobId, j => j with { State = JobState.Completed, Result = result });
        return Task.CompletedTask;
    }

    public Task EndAsync(string jobId, JobState state, string error)
    {
        Update(jobId, j => j with { State = state, Error = error });
        return Task.CompletedTask;
    }

    public Task<IReadOnlyList<string>> RunningJobsAsync() =>
        Task.FromResult<IReadOnlyList<string>>(_jobs.Values.Where(j => j.State == JobState.Running).Select(j => j.JobId).ToList());

    // One process: a coordinator that is gone took the whole "cluster" with it, so a lease is always held.
    public Task RenewLeaseAsync(string jobId, string owner, TimeSpan ttl) => Task.CompletedTask;
    public Task<bool> HasLeaseAsync(string jobId) => Task.FromResult(true);

    private StoredJob Update(string jobId, Func<StoredJob, StoredJob> change)
    {
        lock (_gate)
        {
            if (!_jobs.TryGetValue(jobId, out var job)) throw new KeyNotFoundException($"unknown job id '{jobId}'");
            var updated = change(job);
            _jobs[jobId] = updated;
            return updated;
        }
    }
}
