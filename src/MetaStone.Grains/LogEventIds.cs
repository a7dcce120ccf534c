namespace MetaStone.Grains;

/// <summary>
/// Numbering of the <c>[LoggerMessage]</c> event ids of the silo's grains and services, one block per class, so an
/// operator can filter one kind of event by id while the message texts stay as they were (some are grepped, e.g.
/// "resuming", "Redis unavailable"). Each class declares its own ids inside its block; a new event takes the next free
/// id of its class's block.
/// </summary>
/// <remarks>
/// <list type="table">
/// <item><term>1000–1099</term><description><see cref="ReplicaGrain"/> (1001: a generated candidate, counted by the kill tests)</description></item>
/// <item><term>1100–1199</term><description><see cref="CoordinatorGrain"/></description></item>
/// <item><term>1200–1299</term><description><see cref="CandidateGrain"/></description></item>
/// <item><term>1300–1399</term><description><see cref="Sweeps.SweepGrain"/></description></item>
/// <item><term>1400–1499</term><description><see cref="Durability.AdmissionGrain"/></description></item>
/// <item><term>1500–1599</term><description><see cref="Durability.RecoverableRunGrain"/></description></item>
/// <item><term>1600–1649</term><description><see cref="SiloDrain"/></description></item>
/// <item><term>1650–1699</term><description><see cref="ReplicaHeartbeat"/></description></item>
/// <item><term>1700–1749</term><description>MetaStone.Silo's MembershipWatchdog</description></item>
/// <item><term>1750–1799</term><description>MetaStone.Silo's MetaStoneSilo (Redis outage warnings)</description></item>
/// </list>
/// </remarks>
public static class LogEventIds;
