using MetaStone.Contracts;
using MetaStone.Grains;

namespace MetaStone.Cluster.Tests;

/// <summary>The registry's choice of a replica, without a cluster (issue 12: placement had only end-to-end tests).</summary>
public sealed class ReplicaTableTests
{
    private sealed class ManualClock : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = new(2026, 12, 3, 0, 0, 0, TimeSpan.Zero);
        public override DateTimeOffset GetUtcNow() => Now;
    }

    private static ReplicaLoad Load(string replica, int active = 0, int slots = 8, long ended = 0) =>
        new() { Replica = replica, ActiveSequences = active, QueuedSequences = 0, Slots = slots, ContextLength = 256, CandidatesEnded = ended };

    [Fact]
    public void A_burst_of_picks_spreads_evenly_before_any_heartbeat_shows_it()
    {
        var table = new ReplicaTable(ReplicaPlacementPolicy.LeastLoaded, new ManualClock(), new Random(1));
        table.Report("a", [Load("a/cpu")]);
        table.Report("b", [Load("b/cpu")]);
        var picks = Enumerable.Range(0, 16).Select(_ => table.Pick([])!).ToList();
        Assert.Equal(8, picks.Count(p => p == "a/cpu"));
        Assert.Equal(8, picks.Count(p => p == "b/cpu"));
    }

    [Fact]
    public void Load_is_per_slot_so_a_bigger_batch_takes_proportionally_more()
    {
        var table = new ReplicaTable(ReplicaPlacementPolicy.LeastLoaded, new ManualClock(), new Random(2));
        table.Report("big", [Load("big/gpu", slots: 24)]);
        table.Report("small", [Load("small/cpu", slots: 8)]);
        var picks = Enumerable.Range(0, 32).Select(_ => table.Pick([])!).ToList();
        Assert.Equal(24, picks.Count(p => p == "big/gpu"));
        Assert.Equal(8, picks.Count(p => p == "small/cpu"));
    }

    [Fact]
    public void Candidates_reported_ended_free_their_place_and_excluded_replicas_are_skipped()
    {
        var table = new ReplicaTable(ReplicaPlacementPolicy.LeastLoaded, new ManualClock(), new Random(3));
        table.Report("a", [Load("a/cpu", slots: 1)]);
        table.Report("b", [Load("b/cpu", slots: 1)]);
        string first = table.Pick([])!;
        string second = table.Pick([])!;
        Assert.NotEqual(first, second);
        // The first replica's heartbeat says its candidate ended (within ReconcileAfter of the picks, so only the count frees it).
        table.Report(first[..1], [Load(first, slots: 1, ended: 1)]);
        Assert.Equal(first, table.Pick([]));
        Assert.Equal(second, table.Pick([first]));
        Assert.Null(table.Pick(["a/cpu", "b/cpu"]));
    }

    [Fact]
    public void A_replica_not_heard_from_within_the_liveness_window_is_not_offered()
    {
        var clock = new ManualClock();
        var table = new ReplicaTable(ReplicaPlacementPolicy.LeastLoaded, clock, new Random(4));
        table.Report("a", [Load("a/cpu")]);
        table.Report("b", [Load("b/cpu")]);
        clock.Now += ReplicaTable.LivenessWindow / 2;
        table.Report("b", [Load("b/cpu")]);
        clock.Now += ReplicaTable.LivenessWindow / 2 + TimeSpan.FromMilliseconds(1);
        Assert.Equal(["b/cpu"], table.List().Select(l => l.Replica));
        Assert.All(Enumerable.Range(0, 5), _ => Assert.Equal("b/cpu", table.Pick([])));
    }

    [Fact]
    public void A_heartbeat_drops_replicas_its_silo_no_longer_has_and_reconciles_lost_releases()
    {
        var clock = new ManualClock();
        var table = new ReplicaTable(ReplicaPlacementPolicy.LeastLoaded, clock, new Random(5));
        table.Report("a", [Load("a/cuda:0", slots: 2), Load("a/cuda:1", slots: 2)]);
        table.Report("a", [Load("a/cuda:0", slots: 2)]);
        Assert.Equal(["a/cuda:0"], table.List().Select(l => l.Replica));

        // Two picks whose releases were lost (their caller died): the count is corrected by a later heartbeat, not before.
        table.Pick([]);
        table.Pick([]);
        table.Report("b", [Load("b/cpu", slots: 2, active: 1)]);
        Assert.Equal("b/cpu", table.Pick([])); // a/cuda:0 counts 2 outstanding of 2 slots
        clock.Now += ReplicaTable.ReconcileAfter + TimeSpan.FromMilliseconds(1);
        table.Report("a", [Load("a/cuda:0", slots: 2, active: 0)]);
        table.Report("b", [Load("b/cpu", slots: 2, active: 2)]);
        Assert.Equal("a/cuda:0", table.Pick([]));
    }

    [Fact]
    public void Two_choices_never_picks_the_busier_of_two_replicas()
    {
        var table = new ReplicaTable(ReplicaPlacementPolicy.TwoChoices, new ManualClock(), new Random(6));
        table.Report("idle", [Load("idle/cpu", active: 0)]);
        table.Report("full", [Load("full/cpu", active: 8)]);
        Assert.All(Enumerable.Range(0, 4), _ => Assert.Equal("idle/cpu", table.Pick([])));
    }

    [Fact]
    public void Ended_counts_release_exactly_their_placements_and_a_lost_heartbeat_loses_no_release()
    {
        var table = new ReplicaTable(ReplicaPlacementPolicy.LeastLoaded, new ManualClock(), new Random(7));
        table.Report("a", [Load("a/cpu", slots: 4, ended: 10)]); // a silo that ran before the registry (re)activated: its baseline
        table.Report("b", [Load("b/cpu", slots: 4)]);
        for (int i = 0; i < 8; i++) table.Pick([]); // 4 each
        // Heartbeat of a: 2 ended (12 - 10). Its next heartbeat is lost; the one after says 4 ended in all.
        table.Report("a", [Load("a/cpu", slots: 4, ended: 12)]);
        Assert.Equal(["a/cpu", "a/cpu"], new[] { table.Pick([])!, table.Pick([])! }); // 2 outstanding of 4 vs b's 4
        table.Report("a", [Load("a/cpu", slots: 4, ended: 16)]); // 4 more ended (the 2 reported late and the 2 new): a has 0
        var picks = Enumerable.Range(0, 4).Select(_ => table.Pick([])!).ToList();
        Assert.All(picks, p => Assert.Equal("a/cpu", p)); // a reaches 4 = b
        Assert.Equal(2, new[] { table.Pick([])!, table.Pick([])! }.Distinct().Count()); // a tie again: one each (random among equals)
    }

    [Fact]
    public void A_count_that_goes_back_is_a_restarted_silo_and_releases_nothing_and_outstanding_never_goes_below_zero()
    {
        var table = new ReplicaTable(ReplicaPlacementPolicy.LeastLoaded, new ManualClock(), new Random(8));
        table.Report("a", [Load("a/cpu", slots: 2, ended: 50)]);
        table.Report("b", [Load("b/cpu", slots: 2)]);
        table.Pick([]);
        table.Pick([]); // one each
        table.Report("a", [Load("a/cpu", slots: 2, ended: 3)]); // restarted: 3 is the new baseline, nothing released
        Assert.Equal(2, new[] { table.Pick([])!, table.Pick([])! }.Distinct().Count());
        // More ends than placements (calls the registry did not place, e.g. a direct call): clamped at zero, not negative.
        table.Report("a", [Load("a/cpu", slots: 2, ended: 103)]); // a: 2 outstanding - 100 ended = 0
        Assert.Equal(["a/cpu", "a/cpu"], new[] { table.Pick([])!, table.Pick([])! }); // a 0 → 2, b stays 2
        Assert.Equal(2, new[] { table.Pick([])!, table.Pick([])! }.Distinct().Count()); // a tie (from -98, a would take both)
    }
}
