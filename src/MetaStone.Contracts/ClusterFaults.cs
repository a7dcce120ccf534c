using Orleans.Runtime;

namespace MetaStone.Contracts;

/// <summary>A replica of a draining (stopping) silo refuses new candidates; the caller retries elsewhere with the same seed.</summary>
[GenerateSerializer]
public sealed class ReplicaDrainingException : Exception
{
    public ReplicaDrainingException(string message) : base(message) { }
}

/// <summary>
/// The activation that ran a job or sweep was replaced while it ran: Orleans invalidated it, or another activation wrote its
/// persisted state first (a silo loss can leave two activations of one grain for a moment; Orleans keeps one). The job is not
/// failed: it is still running in its persisted state, and the next call reaches the activation that continues it.
/// </summary>
[GenerateSerializer]
public sealed class ActivationReplacedException : Exception
{
    public ActivationReplacedException(string message) : base(message) { }
}

/// <summary>
/// The one fault classifier of grains and client: which failures mean "the silo or gateway on the other end is gone,
/// unreachable or stopping", so the call may be reissued (elsewhere), as opposed to "the request is wrong". Grains and the
/// client used to have one each, and they disagreed (the client did not know a draining replica, the grains did not know
/// a lost gateway connection).
/// </summary>
public static class ClusterFaults
{
    public static bool IsSiloLoss(Exception e) => e switch
    {
        SiloUnavailableException or TimeoutException or OrleansMessageRejectionException or ReplicaDrainingException or ActivationReplacedException => true,
        // A gateway connection that dropped (the client's side of a silo loss): ConnectionFailedException and kin.
        OrleansException when e.GetType().Name.Contains("Connection", StringComparison.Ordinal) => true,
        AggregateException a => a.InnerExceptions.Count > 0 && a.InnerExceptions.All(IsSiloLoss),
        // A silo that does not know the exception type (older build) sends a fallback carrying its name.
        Orleans.Serialization.UnavailableExceptionFallbackException f => f.ExceptionType?.Contains(nameof(ReplicaDrainingException), StringComparison.Ordinal) == true,
        _ => false,
    };
}
