using MetaStone.Contracts;
using MetaStone.Grains.Engines;
using MetaStone.Grains.Placement;
using Orleans.Runtime;

namespace MetaStone.Grains;

/// <summary>
/// Thin reentrant facade over one device's engine on its own silo: many candidates call it at once and the engine
/// batches them, so the grain never serializes generation.
/// </summary>
[Reentrant, ReplicaPlacement]
public sealed class ReplicaGrain(ReplicaEngines engines, ILocalSiloDetails silo) : Grain, IReplicaGrain
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

    public async Task<CandidateResult> GenerateAsync(CandidateWork work, CancellationToken cancellationToken)
    {
        var result = await Engine.GenerateAsync(work, cancellationToken);
        return result with { Replica = this.GetPrimaryKeyString() };
    }

    public Task<PromptCheck> CheckPromptAsync(JobRequest request) => Task.FromResult(Engine.CheckPrompt(request));

    public Task<ReplicaLoad> GetLoadAsync() => Task.FromResult(LoadOf(this.GetPrimaryKeyString(), Engine));

    public static ReplicaLoad LoadOf(string replica, ICandidateEngine engine)
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
        };
    }
}
