namespace MetaStone.Cli.Doctor;

/// <summary>Outcome of one doctor check. Only <see cref="Fail"/> makes <c>metastone doctor</c> exit non-zero.</summary>
public enum DoctorStatus
{
    Ok,
    /// <summary>Something optional or degraded; everything essential still works.</summary>
    Warn,
    /// <summary>Something MetaStone cannot run without.</summary>
    Fail,
    /// <summary>Reported for context only (e.g. tools only some tests need).</summary>
    Info,
}

/// <param name="Name">Short stable identifier (<c>libstdc++</c>, <c>torch</c>, <c>redis</c>…): scripts match on it.</param>
/// <param name="Detail">What was found, for humans.</param>
/// <param name="Fix">The exact action that resolves a warn/fail, or advice; null when there is nothing to do.</param>
public sealed record DoctorCheck(string Name, DoctorStatus Status, string Detail, string? Fix);
