using MetaStone.Contracts;

namespace MetaStone.Grains.Placement;

/// <summary>
/// What one candidate's generation remembers across replicas, kept apart from the grain so it can be tested without a
/// cluster: which replicas the next pick excludes, when they are allowed again, the attempt number, and the errors the
/// candidate fails with. How often and how long it retries is the budgets' (<see cref="ClusterRetries.CandidateReplica"/>,
/// <see cref="ClusterRetries.ReplicaOffer"/>).
/// </summary>
/// <remarks>
/// One instance per generation (<see cref="CandidateGrain"/>): ask the registry for a replica excluding
/// <see cref="Excluded"/>, then report the outcome with <see cref="NoReplicaOffered"/> or <see cref="ReplicaLost"/>.
/// </remarks>
public sealed class CandidateAttempts(string jobId, int index)
{
    /// <summary>Replicas tried per candidate before the candidate fails.</summary>
    public static int MaxAttempts => ClusterRetries.CandidateReplica.Budget.MaxAttempts;

    private readonly List<string> _excluded = [];

    /// <summary>Replicas that failed this candidate since the registry last ran out of choices: the next pick avoids them.</summary>
    public IReadOnlyList<string> Excluded => _excluded;

    /// <summary>The number of the attempt about to run (1 for the first), recorded in the candidate's result.</summary>
    public int Attempt { get; private set; } = 1;

    /// <summary>
    /// The registry had no replica to offer (none registered, or all excluded, or the registry's silo died): the excluded
    /// replicas are allowed again for the next pick, as each may have failed transiently. Attempts are not given back.
    /// </summary>
    public void NoReplicaOffered() => _excluded.Clear();

    /// <summary>The error of a candidate for which no replica was offered for <paramref name="patience"/>.</summary>
    public InvalidOperationException NoReplicaFailure(TimeSpan patience) =>
        new($"candidate {index} of job {jobId}: no live model replica in the cluster for {patience.TotalSeconds:0} s (tried: {string.Join(", ", _excluded)})");

    /// <summary>The replica's silo died or the call to it timed out: the next attempt avoids it.</summary>
    /// <exception cref="InvalidOperationException">That was the last of <see cref="MaxAttempts"/> attempts.</exception>
    public void ReplicaLost(string replica, Exception error)
    {
        _excluded.Add(replica);
        if (++Attempt > MaxAttempts)
            throw new InvalidOperationException($"candidate {index} of job {jobId} failed on {MaxAttempts} replicas; last error: {error.Message}", error);
    }
}
