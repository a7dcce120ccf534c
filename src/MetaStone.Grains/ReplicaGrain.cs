using MetaStone.Contracts;
using MetaStone.Grains.Engines;
using MetaStone.Grains.Placement;
using Orleans.Runtime;

namespace MetaStone.Grains;

/// <summary>
/// Thin reentrant facade over one device's engine on its own silo: many candidates call it at once and the engine
/// batches them, so the grain never serializes generation. What is in flight or just finished is kept in the silo's
/// <see cref="ReplicaWork"/>, joinable by a resumed job.
/// </summary>
[Reentrant, ReplicaPlacement]
public sealed partial class ReplicaGrain(ReplicaEngines engines, ReplicaWork work, ILocalSiloDetails silo, SiloDrain drain) : Grain, IReplicaGrain
{
    private ICandidateEngine? _engine;

    private ICandidateEngine Engine => _engine ?? throw new InvalidOperationException("replica grain is not activated");

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        string key = this.GetPrimaryKeyString();
        var (siloName, device) = ReplicaEngines.ParseReplicaKey(key);
        if (siloName != silo.Name)
            throw new InvalidOperationException($"replica '{key}' was activated on silo '{silo.Name}', which does not own it");
        _engine = engines.ForDevice(device);
        return Task.CompletedTask;
    }

    public async Task<CandidateResult> GenerateAsync(CandidateWork candidate, CancellationToken cancellationToken)
    {
        string replica = this.GetPrimaryKeyString();
        try
        {
            // A candidate this replica has in flight or finished lately is joined even while draining: no new work.
            return await (work.Find(replica, candidate, drain.Draining ? null : Engine, cancellationToken)
                ?? throw new ReplicaDrainingException($"replica {replica} is stopping and takes no new candidates"));
        }
        finally
        {
            // Every call was placed by one registry pick: the next heartbeat releases it there (no call of its own).
            work.CallEnded(replica);
        }
    }

    public async Task<CandidateResult?> JoinAsync(CandidateWork candidate, CancellationToken cancellationToken) =>
        work.Find(this.GetPrimaryKeyString(), candidate, null, cancellationToken) is { } found ? await found : null;

    public Task<PromptCheck> CheckPromptAsync(JobRequest request) => Task.FromResult(Engine.CheckPrompt(request));

    public Task<ModelInfo> DescribeModelAsync() => Task.FromResult(Engine.Model);

    public Task<ReplicaLoad> GetLoadAsync() => Task.FromResult(LoadOf(this.GetPrimaryKeyString(), Engine, work));

    public static ReplicaLoad LoadOf(string replica, ICandidateEngine engine, ReplicaWork work)
    {
        var load = engine.Load;
        return new ReplicaLoad
        {
            Replica = replica,
            ActiveSequences = load.ActiveSequences,
            QueuedSequences = load.QueuedSequences,
            Slots = load.Slots,
            TokensPerSecond = load.TokensPerSecond,
            GeneratedTokens = load.GeneratedTokens,
            ContextLength = engine.ContextLength,
            CandidatesEnded = work.CallsEnded(replica),
        };
    }

    /// <summary>Event id of the one log line per generated candidate, at Debug (the kill tests enable it to count generations).</summary>
    public const int CandidateGeneratedEventId = 1001;
}
