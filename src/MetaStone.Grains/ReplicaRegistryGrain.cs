using MetaStone.Contracts;

namespace MetaStone.Grains;

/// <summary>How the registry chooses a replica for a candidate.</summary>
public enum ReplicaPlacementPolicy
{
    /// <summary>The replica with the fewest busy sequences per slot (random among equals). The default: the registry
    /// sees every assignment, so its counts are exact and a burst of k candidates spreads evenly.</summary>
    LeastLoaded,
    /// <summary>Power of two choices: the less loaded of two random replicas. Meant for dispatchers with stale load
    /// information; here it leaves some replicas a batch more than others (see docs/cluster.md).</summary>
    TwoChoices,
}

/// <summary>Placement settings of the registry; every silo must be given the same ones (the registry may activate on any).</summary>
public sealed record ReplicaPlacementOptions(ReplicaPlacementPolicy Policy = ReplicaPlacementPolicy.LeastLoaded)
{
    public static ReplicaPlacementPolicy ParsePolicy(string name) => name.Trim().ToLowerInvariant() switch
    {
        "least-loaded" or "leastloaded" => ReplicaPlacementPolicy.LeastLoaded,
        "two-choices" or "twochoices" or "p2c" => ReplicaPlacementPolicy.TwoChoices,
        _ => throw new ArgumentException($"unknown placement policy '{name}' (valid: least-loaded, two-choices)"),
    };
}

/// <summary>
/// The cluster's list of live replicas. Each silo reports its replicas' load twice a second; a replica not heard
/// from for <see cref="ReplicaTable.LivenessWindow"/> is not offered. If this grain's silo dies it re-activates elsewhere and
/// is complete again after one heartbeat round. The choosing is <see cref="ReplicaTable"/> (pure, unit-tested); the grain
/// only makes it the cluster's single table.
/// </summary>
public sealed class ReplicaRegistryGrain(ReplicaPlacementOptions options) : Grain, IReplicaRegistryGrain
{
    private readonly ReplicaTable _table = new(options.Policy, TimeProvider.System, Random.Shared);

    public Task ReportAsync(string silo, IReadOnlyList<ReplicaLoad> replicas) { _table.Report(silo, replicas); return Task.CompletedTask; }

    public Task<string?> PickAsync(IReadOnlyList<string> exclude) => Task.FromResult(_table.Pick(exclude));

    public Task<IReadOnlyList<ReplicaLoad>> ListAsync() => Task.FromResult(_table.List());

    public Task ForgetAsync(string replica) { _table.Forget(replica); return Task.CompletedTask; }
}

/// <summary>
/// The replica table behind the registry: reported loads, candidates placed and not yet released, liveness, and the choice
/// of a replica for the next candidate. Not thread-safe: the registry grain calls it one message at a time.
/// </summary>
/// <remarks>
/// A placement is released by the replica's heartbeat, not by a call of the candidate: each report carries the replica's
/// running count of ended candidate calls (<see cref="ReplicaLoad.CandidatesEnded"/>), and what ended since the previous
/// report is subtracted from the outstanding count. So a candidate costs one registry call (its pick), and a finished
/// candidate's place is freed up to one heartbeat (0.5 s) later instead of at once. That lag does not change the spread of a
/// burst (a burst's picks are counted at once, as before) and only delays the freeing of places by candidates that ended
/// on a replica; a count lost with a dead silo is still reconciled with the reported load.
/// </remarks>
public sealed class ReplicaTable(ReplicaPlacementPolicy policy, TimeProvider clock, Random random)
{
    public static readonly TimeSpan LivenessWindow = TimeSpan.FromSeconds(3);

    /// <summary>Reports this long after the last pick may correct the outstanding count (releases lost with a dead silo).</summary>
    public static readonly TimeSpan ReconcileAfter = TimeSpan.FromSeconds(1);

    private sealed class Entry(ReplicaLoad load, DateTimeOffset seenAt)
    {
        public ReplicaLoad Load { get; set; } = load;
        public DateTimeOffset SeenAt { get; set; } = seenAt;
        /// <summary>Candidates placed here and not yet released: exact and immediate, unlike the reported load,
        /// which lags by up to a heartbeat (a burst of k picks happens within milliseconds).</summary>
        public int Outstanding { get; set; }
        public DateTimeOffset LastPickAt { get; set; }
        /// <summary>The replica's <see cref="ReplicaLoad.CandidatesEnded"/> at its previous report.</summary>
        public long EndedAtLastReport { get; set; } = load.CandidatesEnded;
    }

    private readonly Dictionary<string, Entry> _replicas = [];

    /// <summary>A silo's heartbeat: its replicas' loads; replicas of that silo missing from the report are dropped.</summary>
    public void Report(string silo, IReadOnlyList<ReplicaLoad> replicas)
    {
        var now = clock.GetUtcNow();
        foreach (var stale in _replicas.Keys.Where(k => k.StartsWith(silo + "/", StringComparison.Ordinal) && replicas.All(r => r.Replica != k)).ToList())
            _replicas.Remove(stale);
        foreach (var load in replicas)
        {
            if (_replicas.TryGetValue(load.Replica, out var entry))
            {
                // Placements ended since the last report are released. A count that went back is a restarted silo of the
                // same name: its count starts afresh, and what it had outstanding is reconciled below.
                long ended = load.CandidatesEnded - entry.EndedAtLastReport;
                if (ended > 0) entry.Outstanding = (int)Math.Max(0, entry.Outstanding - ended);
                entry.EndedAtLastReport = load.CandidatesEnded;
                entry.Load = load;
                entry.SeenAt = now;
                if (entry.Outstanding > load.Busy && now - entry.LastPickAt > ReconcileAfter) entry.Outstanding = load.Busy;
            }
            else _replicas[load.Replica] = new Entry(load, now);
        }
    }

    /// <summary>The replica for the next candidate (outstanding until a report counts it ended), or null when none is live.</summary>
    public string? Pick(IReadOnlyList<string> exclude)
    {
        var live = Live().Where(e => !exclude.Contains(e.Key)).Select(e => e.Value).ToList();
        if (live.Count == 0) return null;
        var chosen = policy == ReplicaPlacementPolicy.TwoChoices ? TwoChoices(live) : LeastLoaded(live);
        chosen.Outstanding++;
        chosen.LastPickAt = clock.GetUtcNow();
        return chosen.Load.Replica;
    }

    public void Forget(string replica) => _replicas.Remove(replica);

    public IReadOnlyList<ReplicaLoad> List() => Live().Select(e => e.Value.Load).OrderBy(l => l.Replica, StringComparer.Ordinal).ToList();

    private Entry LeastLoaded(List<Entry> live)
    {
        double least = live.Min(Busy);
        var best = live.Where(e => Busy(e) == least).ToList();
        return best[random.Next(best.Count)];
    }

    private Entry TwoChoices(List<Entry> live)
    {
        if (live.Count == 1) return live[0];
        int a = random.Next(live.Count), b = random.Next(live.Count - 1);
        if (b >= a) b++;
        double busyA = Busy(live[a]), busyB = Busy(live[b]);
        return busyA < busyB || (busyA == busyB && random.Next(2) == 0) ? live[a] : live[b];
    }

    private IEnumerable<KeyValuePair<string, Entry>> Live()
    {
        var cutoff = clock.GetUtcNow() - LivenessWindow;
        return _replicas.Where(e => e.Value.SeenAt >= cutoff);
    }

    /// <summary>Busy sequences per slot, so a replica with a bigger batch takes proportionally more.</summary>
    private static double Busy(Entry e) => Math.Max(e.Load.Busy, e.Outstanding) / (double)Math.Max(1, e.Load.Slots);
}

public static class ReplicaRegistryExtensions
{
    /// <summary>
    /// A live replica chosen at random, looking again while none is registered (a cluster that is still starting) as
    /// <paramref name="patience"/> allows (<see cref="ClusterRetries.ReplicaListed"/> by default); then it fails naming the problem.
    /// </summary>
    public static async Task<string> AnyReplicaAsync(this IReplicaRegistryGrain registry, RetryPolicy? patience = null)
    {
        try
        {
            return await (patience ?? ClusterRetries.ReplicaListed).ExecuteAsync(async (_, _) =>
            {
                var replicas = await registry.ListAsync();
                return replicas.Count > 0 ? replicas[Random.Shared.Next(replicas.Count)].Replica : throw new NoReplicaOfferedException();
            });
        }
        catch (NoReplicaOfferedException)
        {
            throw new InvalidOperationException("no model replica is registered in the cluster: start a silo with a model first");
        }
    }
}
