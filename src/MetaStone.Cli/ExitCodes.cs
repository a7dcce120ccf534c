namespace MetaStone.Cli;

/// <summary>
/// The exit codes of every <c>metastone</c> verb (documented in README.md, "Exit codes"). One scheme: what went wrong
/// decides the code, not which verb saw it.
/// </summary>
public static class ExitCodes
{
    /// <summary>Done as asked.</summary>
    public const int Ok = 0;
    /// <summary>The work itself failed: a failed or unknown job or sweep, a cluster that did not answer, a failed check of <c>doctor</c>.</summary>
    public const int Failed = 1;
    /// <summary>Bad input, found before any work: arguments, options, files, a model directory that cannot be loaded.</summary>
    public const int BadInput = 2;
    /// <summary><c>metastone silo</c> only: the silo's row in the membership table was lost (Redis restarted without persistence); restart it.</summary>
    public const int MembershipLost = MetaStone.Silo.SiloExit.MembershipLost;
    /// <summary>Admission control refused the submission (cluster at its running-job limit): sysexits' EX_TEMPFAIL, try again later.</summary>
    public const int Busy = 75;
    /// <summary>Interrupted (Ctrl+C) or cancelled: 128 + SIGINT, as shells report it.</summary>
    public const int Interrupted = 130;
}
