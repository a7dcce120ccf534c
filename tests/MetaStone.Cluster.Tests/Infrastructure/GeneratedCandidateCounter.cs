using MetaStone.Grains;
using Microsoft.Extensions.Logging;

namespace MetaStone.Cluster.Tests.Infrastructure;

/// <summary>
/// Counts the candidates an in-process silo's engines generated, from the one log event its replica grain writes per
/// candidate (<see cref="ReplicaGrain.CandidateGeneratedEventId"/>): add it to the silo's logging.
/// </summary>
public sealed class GeneratedCandidateCounter : ILoggerProvider
{
    private int _count;
    public int Count => Volatile.Read(ref _count);

    public void AddTo(ILoggingBuilder logging)
    {
        logging.AddProvider(this);
        logging.AddFilter<GeneratedCandidateCounter>(typeof(ReplicaGrain).FullName, LogLevel.Debug);
    }

    public ILogger CreateLogger(string categoryName) => new Counter(this);
    public void Dispose() { }

    private sealed class Counter(GeneratedCandidateCounter owner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (eventId.Id == ReplicaGrain.CandidateGeneratedEventId) Interlocked.Increment(ref owner._count);
        }
    }
}
