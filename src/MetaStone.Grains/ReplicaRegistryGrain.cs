using MetaStone.Contracts;

namespace MetaStone.Grains;

/// <summary>
/// The cluster's list of live replicas. Each silo reports its replicas' load twice a second; a replica not heard
/// from for <see cref="LivenessWindow"/> is not offered. If this grain's silo dies it re-activates elsewhere and
/// is complete again after one heartbeat round.
/// </summary>
public sealed class ReplicaRegistryGrain : Grain, IReplicaRegistryGrain
{
    public static readonly TimeSpan LivenessWindow = TimeSpan.FromSeconds(3);

    private sealed class Entry(ReplicaLoad load, DateTime seenAt)
    {
        public ReplicaLoad Load { get; set; } = load;
        public DateTime SeenAt { get; set; } = seenAt;
        /// <summary>Candidates sent since the last report: placement counts them so a burst does not pile onto one replica.</summary>
        public int AssignedSinceReport { get; set; }
    }

    private readonly Dictionary<string, Entry> _replicas = [];

    public Task ReportAsync(string silo, IReadOnlyList<ReplicaLoad> replicas)
    {
        var now = DateTime.UtcNow;
        foreach (var stale in _replicas.Keys.Where(k => k.StartsWith(silo + "/", StringComparison.Ordinal) && replicas.All(r => r.Replica != k)).ToList())
            _replicas.Remove(stale);
        foreach (var load in replicas)
        {
            if (_replicas.TryGetValue(load.Replica, out var entry))
            {
                entry.Load = load;
                entry.SeenAt = now;
                entry.AssignedSinceReport = 0;
            }
            else _replicas[load.Replica] = new Entry(load, now);
        }
        return Task.CompletedTask;
    }

    public Task<string?> PickAsync(IReadOnlyList<string> exclude)
    {
        var live = Live().Where(e => !exclude.Contains(e.Key)).ToList();
        if (live.Count == 0) return Task.FromResult<string?>(null);
        var chosen = live[0];
        if (live.Count > 1)
        {
            // Power of two choices: two random replicas, the less busy one wins (random on ties).
            int a = Random.Shared.Next(live.Count), b = Random.Shared.Next(live.Count - 1);
            if (b >= a) b++;
            double busyA = Busy(live[a].Value), busyB = Busy(live[b].Value);
            chosen = busyA < busyB || (busyA == busyB && Random.Shared.Next(2) == 0) ? live[a] : live[b];
        }
        chosen.Value.AssignedSinceReport++;
        return Task.FromResult<string?>(chosen.Key);
    }

    public Task<IReadOnlyList<ReplicaLoad>> ListAsync() =>
        Task.FromResult<IReadOnlyList<ReplicaLoad>>(Live().Select(e => e.Value.Load).OrderBy(l => l.Replica, StringComparer.Ordinal).ToList());

    public Task ForgetAsync(string replica)
    {
        _replicas.Remove(replica);
        return Task.CompletedTask;
    }

    private IEnumerable<KeyValuePair<string, Entry>> Live()
    {
        var cutoff = DateTime.UtcNow - LivenessWindow;
        return _replicas.Where(e => e.Value.SeenAt >= cutoff);
    }

    /// <summary>Busy sequences per slot, so a replica with a bigger batch takes proportionally more.</summary>
    private static double Busy(Entry e) => (e.Load.Busy + e.AssignedSinceReport) / (double)Math.Max(1, e.Load.Slots);
}
