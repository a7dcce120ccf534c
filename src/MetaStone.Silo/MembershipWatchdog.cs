using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Runtime;
using StackExchange.Redis;

namespace MetaStone.Silo;

/// <summary>How a silo process ended: 0 after a requested stop, <see cref="MembershipLost"/> when the watchdog stopped it.</summary>
public static class SiloExit
{
    public const int MembershipLost = 3;
    private static int _code;
    public static int Code => Volatile.Read(ref _code);
    internal static void Set(int code) => Volatile.Write(ref _code, code);
}

/// <summary>
/// Issue 11: after a Redis without persistence restarted, the membership table was gone, and silos logged
/// "Failed to update table entry … bad argument #1 to 'find'" every 30 s forever, never re-registered and never exited,
/// so every client got "no silo gateway answered". This watchdog checks every 2 s that this silo's row is still in the
/// table; once it has been seen and then is missing for three checks in a row (Redis answered each time: an outage is
/// not a loss), the silo says so in one line and stops with exit code 3, so its supervisor (docker, systemd, a script)
/// restarts it and it registers afresh in the new table.
/// </summary>
public sealed partial class MembershipWatchdog(IConnectionMultiplexer redis, string membershipKey, ILocalSiloDetails silo,
    IHostApplicationLifetime lifetime, ILogger<MembershipWatchdog> logger) : BackgroundService
{
    public static readonly TimeSpan Period = TimeSpan.FromSeconds(2);

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "_exit")]
    private static extern void ExitNow(int code);
    public const int MissesBeforeExit = 3;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        bool seen = false;
        int misses = 0;
        string address = $"\"{silo.SiloAddress.ToParsableString()}\"";
        while (!stoppingToken.IsCancellationRequested)
        {
            try { await Task.Delay(Period, stoppingToken); } catch (OperationCanceledException) { return; }
            bool present;
            try { present = (await redis.GetDatabase().HashGetAllAsync(membershipKey)).Any(e => e.Value.ToString().Contains(address, StringComparison.Ordinal)); }
            catch (Exception e) when (e is RedisException or TimeoutException or ObjectDisposedException)
            {
                continue; // Redis unreachable: not evidence that the table was lost
            }
            if (present) { seen = true; misses = 0; continue; }
            if (!seen || ++misses < MissesBeforeExit) continue;
            LogMembershipLost(logger, silo.Name, membershipKey, SiloExit.MembershipLost);
            Console.Error.WriteLine($"metastone silo {silo.Name}: the cluster membership in Redis was lost (Redis restarted without persistence?); exiting with code {SiloExit.MembershipLost} to re-register on restart");
            SiloExit.Set(SiloExit.MembershipLost);
            lifetime.StopApplication();
            // Orleans' stop keeps retrying updates of the table that is gone; past a short wait the process ends
            // at once with the code (nothing is lost: jobs and candidates are in Redis, the engines hold no durable state).
            _ = Task.Run(async () =>
            {
                await Task.Delay(TimeSpan.FromSeconds(10), CancellationToken.None);
                Console.Error.Flush();
                Console.Out.Flush();
                ExitNow(SiloExit.MembershipLost);
            }, CancellationToken.None);
            return;
        }
    }

    // Log events 1700–1749 (numbering in LogEventIds in MetaStone.Grains).
    [LoggerMessage(EventId = 1701, Level = LogLevel.Critical, Message = "silo {Silo}: its row is gone from the membership table {Key} (Redis restarted without persistence, or the table was deleted); stopping with exit code {Code} so a supervisor restarts it and it registers again")]
    private static partial void LogMembershipLost(ILogger logger, string silo, string key, int code);
}
