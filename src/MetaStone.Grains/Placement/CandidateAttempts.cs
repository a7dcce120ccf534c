namespace MetaStone.Grains.Placement;

/// <summary>
/// The retry decisions of one candidate's generation across replicas, kept apart from the grain so they can be tested
/// without a cluster: which replicas the next pick excludes, when they are allowed again, when the attempts are used
/// up, and how long the candidate waits while no replica is registered at all.
/// </summary>
/// <remarks>
/// One instance per generation (<see cref="CandidateGrain"/>): ask the registry for a replica excluding
/// <see cref="Excluded"/>, then report the outcome with <see cref="ReplicaPicked"/>, <see cref="NoReplicaAvailable"/> or
/// <see cref="ReplicaLost"/>. The methods that give up throw the exception the candidate fails with.
/// </remarks>
public sealed class CandidateAttempts(string jobId, int index, TimeProvider clock)
{
    /// <summary>Replicas tried per candidate before the candidate fails.</summary>
    public const int MaxAttempts = 6;
    /// <summary>How long a candidate waits for any replica to be registered.</summary>
    public static readonly TimeSpan NoReplicaPatience = TimeSpan.FromSeconds(30);
    /// <summary>Pause before asking the registry again when it had no replica to offer.</summary>
    public static readonly TimeSpan NoReplicaPause = TimeSpan.FromMilliseconds(250);

    private readonly List<string> _excluded = [];
    private DateTimeOffset _waitingSince = clock.GetUtcNow();

    /// <summary>Replicas that failed this candidate since the registry last ran out of choices: the next pick avoids them.</summary>
    public IReadOnlyList<string> Excluded => _excluded;

    /// <summary>The number of the attempt about to run (1 for the first), recorded in the candidate's result.</summary>
    public int Attempt { get; private set; } = 1;

    /// <summary>The registry offered a replica: the wait for one (if any) is over.</summary>
    public void ReplicaPicked() => _waitingSince = clock.GetUtcNow();

    /// <summary>
    /// The registry had no replica to offer (none registered, or all excluded, or the registry's silo died). Returns how
    /// long to wait before asking again, having allowed the excluded replicas again: each may have failed transiently.
    /// </summary>
    /// <exception cref="InvalidOperationException">No replica was offered for longer than <see cref="NoReplicaPatience"/>.</exception>
    public TimeSpan NoReplicaAvailable()
    {
        if (clock.GetUtcNow() - _waitingSince > NoReplicaPatience)
            throw new InvalidOperationException($"candidate {index} of job {jobId}: no live model replica in the cluster for {NoReplicaPatience.TotalSeconds:0} s (tried: {string.Join(", ", _excluded)})");
        _excluded.Clear();
        return NoReplicaPause;
    }

    /// <summary>The replica's silo died or the call to it timed out: the next attempt avoids it.</summary>
    /// <exception cref="InvalidOperationException">That was the last of <see cref="MaxAttempts"/> attempts.</exception>
    public void ReplicaLost(string replica, Exception error)
    {
        _excluded.Add(replica);
        if (++Attempt > MaxAttempts)
            throw new InvalidOperationException($"candidate {index} of job {jobId} failed on {MaxAttempts} replicas; last error: {error.Message}", error);
    }
}
