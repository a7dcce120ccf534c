using System.Threading.Channels;
using MetaStone.Reasoning.Sequences;

namespace MetaStone.Model.Generation;

/// <summary>
/// One submitted request while the engine works on it: the rules its sequences follow, where its updates go, and the
/// results collected per candidate until the last one completes the request (or one failure fails it).
/// </summary>
internal sealed class GenerationRequestState(GenerationRequest request, SequenceRules rules, ChannelWriter<CandidateUpdate>? updates)
{
    private readonly Trajectory?[] _results = new Trajectory?[request.Seeds.Count];
    private int _remaining = request.Seeds.Count;

    public GenerationRequest Request { get; } = request;
    /// <summary>Stop tokens, limits, budgets and step rules of every candidate of this request.</summary>
    public SequenceRules Rules { get; } = rules;
    public TaskCompletionSource<IReadOnlyList<Trajectory>> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public volatile bool Cancelled;
    public CancellationTokenRegistration Registration;

    public int CandidateIndex(int localIndex) => Request.FirstCandidateIndex + localIndex;

    public void Emit(CandidateUpdate update) => updates?.TryWrite(update);

    /// <summary>Records one candidate's end (null = dropped); the last one completes the request.</summary>
    public void Finish(int localIndex, Trajectory? result)
    {
        _results[localIndex] = result;
        if (--_remaining > 0) return;
        Registration.Dispose();
        updates?.TryComplete();
        if (Cancelled || _results.Any(r => r is null)) Completion.TrySetCanceled();
        else Completion.TrySetResult(_results!);
    }

    /// <summary>One candidate failed for good: the request fails (its other candidates are dropped like a
    /// cancellation), nothing else is affected.</summary>
    public void FailCandidate(Exception error)
    {
        Fail(error);
        Cancelled = true;
    }

    public void Fail(Exception error)
    {
        Registration.Dispose();
        updates?.TryComplete(error);
        Completion.TrySetException(error);
    }
}

/// <summary>A candidate waiting for a slot: which request, which of its seeds, and how many tries already failed.</summary>
internal readonly record struct QueuedCandidate(GenerationRequestState Request, int LocalIndex, int Attempts = 0)
{
    /// <summary>From its second restart a candidate runs alone, so a fault that follows it fails only it.</summary>
    public bool RunsAlone => Attempts >= 2;
}

/// <summary>A candidate holding a KV cache slot and a batch row: its policy state, random stream and scored steps.</summary>
internal sealed class RunningSequence(QueuedCandidate candidate, int slot, SharedPrefix prefix)
{
    public GenerationRequestState Request { get; } = candidate.Request;
    public int LocalIndex { get; } = candidate.LocalIndex;
    public int CandidateIndex => Request.CandidateIndex(LocalIndex);
    public long Seed => Request.Request.Seeds[LocalIndex];
    public int Slot { get; } = slot;
    /// <summary>The live prompt whose cache rows this slot holds.</summary>
    public SharedPrefix Prefix { get; } = prefix;
    /// <summary>Budget forcing, stop rules, limits and step tracking.</summary>
    public SequencePolicy Policy { get; } = new(candidate.Request.Rules, candidate.Request.Request.PromptIds);
    /// <summary>The candidate's own generator: one uniform per step, whatever its batchmates, so the seed alone fixes the trajectory.</summary>
    public Random Random { get; } = new(unchecked((int)(candidate.Request.Request.Seeds[candidate.LocalIndex] ^ (candidate.Request.Request.Seeds[candidate.LocalIndex] >> 32))));
    public List<StepScore> Steps { get; } = [];
    /// <summary>Earlier tries that ended in a failed step.</summary>
    public int Attempts { get; } = candidate.Attempts;
    public bool RunsAlone => Attempts >= 2;

    public QueuedCandidate Requeued() => new(Request, LocalIndex, Attempts);

    /// <summary>The finished trajectory, or null when the policy has not ended the sequence (it was cancelled).</summary>
    public Trajectory? ToTrajectory() => Policy.End is SequenceEnd end
        ? new Trajectory
        {
            CandidateIndex = CandidateIndex,
            Seed = Seed,
            PromptTokens = Policy.PromptLength,
            ResponseIds = [.. Policy.ResponseIds],
            // The finish reasons callers see: a stop token, or any limit (tokens, context window, answer budget).
            FinishReason = end == SequenceEnd.StopToken ? FinishReason.Stop : FinishReason.Length,
            ThinkingTokens = Policy.ThinkingTokens,
            AnswerTokens = Policy.AnswerTokens,
            ThinkingForcedClosed = Policy.ThinkingForcedClosed,
            Steps = Steps,
        }
        : null;
}
