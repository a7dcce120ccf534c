using MetaStone.Contracts;
using MetaStone.Grains.Engines;
using MetaStone.Grains.Jobs;
using Microsoft.Extensions.Logging;
using MetaStone.Grains.Placement;
using Orleans.Runtime;

namespace MetaStone.Grains;

/// <summary>
/// Thin reentrant facade over one device's engine on its own silo: many candidates call it at once and the engine
/// batches them, so the grain never serializes generation.
/// </summary>
[Reentrant, ReplicaPlacement]
public sealed class ReplicaGrain(ReplicaEngines engines, IJobStore store, ILocalSiloDetails silo, SiloDrain drain, ILogger<ReplicaGrain> logger) : Grain, IReplicaGrain
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
        if (drain.Draining)
            throw new ReplicaDrainingException($"replica {this.GetPrimaryKeyString()} is stopping and takes no new candidates");
        CandidateResult result;
        MetaStoneMetrics.CandidatesInFlight.Add(1);
        try { result = await Engine.GenerateAsync(work, cancellationToken) with { Replica = this.GetPrimaryKeyString() }; }
        finally { MetaStoneMetrics.CandidatesInFlight.Add(-1); }
        MetaStoneMetrics.Generated(result);
        // Persist at the source: if the caller's silo died while this ran, the candidate is still kept, and a
        // resumed job finds it instead of generating it again.
        try { await store.RecordGeneratedAsync(work.JobId, result); }
        catch (Exception e) { logger.LogWarning("candidate {Index} of job {Job}: recording it failed ({Error}); the coordinator stores it instead", work.Index, work.JobId, e.Message); }
        return result;
    }

    public Task<PromptCheck> CheckPromptAsync(JobRequest request) => Task.FromResult(Engine.CheckPrompt(request));

    public Task<ModelInfo> DescribeModelAsync() => Task.FromResult(Engine.Model);

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
