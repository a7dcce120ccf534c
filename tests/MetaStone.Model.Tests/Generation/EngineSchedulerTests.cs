using MetaStone.Model.Generation;
using MetaStone.Reasoning.Sequences;
using static TorchSharp.torch;

namespace MetaStone.Model.Tests.Generation;

/// <summary>
/// The scheduler's decisions (who joins, which slot, which prompt is shared, who leaves, what a failed step involved)
/// without a model: fast, and the admission rules in one place. The only tensors are the tiny stand-ins of a prefill
/// that the scheduler must free when a prompt's last holder leaves.
/// </summary>
public sealed class EngineSchedulerTests
{
    private static readonly int[] PromptA = [5, 6, 7], PromptB = [8, 9];

    private static GenerationRequestState Request(int[] prompt, int candidates) => new(
        new GenerationRequest { PromptIds = prompt, Seeds = [.. Enumerable.Range(0, candidates).Select(i => (long)i)] },
        new SequenceRules { MaxNewTokens = 10, MaxSequenceLength = 64 }, updates: null);

    private static IEnumerable<QueuedCandidate> Candidates(GenerationRequestState request, int attempts = 0) =>
        Enumerable.Range(0, request.Request.Seeds.Count).Select(i => new QueuedCandidate(request, i, attempts));

    private static PrefilledPrompt FakePrefill() => new(zeros(4).DetachFromDisposeScope(), zeros(2).DetachFromDisposeScope(), zeros(8).DetachFromDisposeScope());

    /// <summary>Does what the engine does with an admission: the first member of a new prompt creates the prefix.</summary>
    private static List<SharedPrefix> ActivateAll(EngineScheduler scheduler, IReadOnlyList<AdmissionGroup> groups)
    {
        var prefixes = new List<SharedPrefix>();
        foreach (var group in groups)
        {
            var prefix = group.LivePrefix;
            if (prefix is null) scheduler.AddPrefix(prefix = new SharedPrefix(group.Prompt, FakePrefill()));
            foreach (var (candidate, slot) in group.Members) scheduler.Activate(candidate, slot, prefix);
            prefixes.Add(prefix);
        }
        scheduler.AdmissionDone();
        return prefixes;
    }

    [Fact]
    public void AdmitsFirstInFirstOutUpToTheFreeSlots()
    {
        var scheduler = new EngineScheduler(slots: 3, sharePrefix: true);
        var request = Request(PromptA, 5);
        scheduler.Enqueue(Candidates(request));
        var groups = scheduler.Admit();
        var group = Assert.Single(groups);
        Assert.Equal([0, 1, 2], group.Members.Select(m => m.Candidate.LocalIndex));
        Assert.Equal([0, 1, 2], group.Members.Select(m => m.Slot));
        Assert.Null(group.LivePrefix);
        ActivateAll(scheduler, groups);
        Assert.Equal(2, scheduler.WaitingCount);
        Assert.Equal(0, scheduler.FreeSlotCount);
        Assert.Empty(scheduler.Admit());
    }

    [Fact]
    public void CandidatesWithTheSamePromptFormOneGroupOnlyWhenPrefixesAreShared()
    {
        var shared = new EngineScheduler(slots: 8, sharePrefix: true);
        shared.Enqueue(Candidates(Request(PromptA, 2)));
        shared.Enqueue(Candidates(Request(PromptB, 1)));
        shared.Enqueue(Candidates(Request(PromptA, 2)));
        Assert.Equal([4, 1], shared.Admit().Select(g => g.Members.Count));

        var separate = new EngineScheduler(slots: 8, sharePrefix: false);
        separate.Enqueue(Candidates(Request(PromptA, 3)));
        Assert.Equal([1, 1, 1], separate.Admit().Select(g => g.Members.Count));
    }

    [Fact]
    public void ALiveOrRetiredPromptDecidesBetweenCopyingAndPrefilling()
    {
        var scheduler = new EngineScheduler(slots: 4, sharePrefix: true);
        scheduler.Enqueue(Candidates(Request(PromptA, 2)));
        var prefix = ActivateAll(scheduler, scheduler.Admit()).Single();

        // A later request with the same prompt copies the live rows; another prompt prefills.
        scheduler.Enqueue(Candidates(Request(PromptA, 1)));
        scheduler.Enqueue(Candidates(Request(PromptB, 1)));
        var groups = scheduler.Admit();
        Assert.Same(prefix, groups[0].LivePrefix);
        Assert.Null(groups[1].LivePrefix);
        ActivateAll(scheduler, groups);
        Assert.Equal([0, 1, 2], prefix.Slots.Order());

        // The prompt stays live until its last holder leaves, then its prefill is freed.
        var retired = scheduler.Retire([0, 2]);
        Assert.Equal([0, 2], retired.Select(s => s.Slot));
        Assert.Equal([1, 3], scheduler.Running.Select(s => s.Slot)); // the remaining rows keep their order
        Assert.False(prefix.Prefill.LastLogits.IsInvalid);
        scheduler.Retire([0]);
        Assert.True(prefix.Prefill.LastLogits.IsInvalid);
        scheduler.Enqueue(Candidates(Request(PromptA, 1)));
        Assert.Null(Assert.Single(scheduler.Admit()).LivePrefix);
    }

    [Fact]
    public void ACandidateOnItsSecondRestartRunsAlone()
    {
        var scheduler = new EngineScheduler(slots: 8, sharePrefix: true);
        var healthy = Request(PromptA, 2);
        var suspect = Request(PromptB, 1);
        scheduler.Enqueue(Candidates(healthy));
        scheduler.Enqueue(Candidates(suspect, attempts: 2));
        scheduler.Enqueue(Candidates(Request(PromptA, 1)));

        // Candidates ahead of it are admitted, but not past it.
        var first = scheduler.Admit();
        Assert.Equal(2, first.Sum(g => g.Members.Count));
        ActivateAll(scheduler, first);
        Assert.Empty(scheduler.Admit()); // it waits until the batch is empty
        scheduler.Retire([0, 1]);

        var alone = scheduler.Admit();
        Assert.Same(suspect, Assert.Single(Assert.Single(alone).Members).Candidate.Request);
        ActivateAll(scheduler, alone);
        Assert.Empty(scheduler.Admit()); // nothing joins it
        scheduler.Retire([0]);
        Assert.Single(scheduler.Admit());
    }

    [Fact]
    public void AFailedStepInvolvesTheRunningAndAdmittedCandidatesNotTheQueue()
    {
        var scheduler = new EngineScheduler(slots: 3, sharePrefix: true);
        var running = Request(PromptA, 2);
        scheduler.Enqueue(Candidates(running));
        var prefix = ActivateAll(scheduler, scheduler.Admit()).Single();
        var admitting = Request(PromptB, 2);
        var queued = Request(PromptB, 1);
        scheduler.Enqueue(Candidates(admitting));
        scheduler.Enqueue(Candidates(queued));
        Assert.Single(scheduler.Admit()); // takes one of 'admitting' into the last slot; the step then throws

        var involved = scheduler.ResetAfterFailedStep();
        Assert.Equal([(running, 0), (running, 1), (admitting, 0)], involved.Select(c => (c.Request, c.LocalIndex)));
        Assert.Equal(3, scheduler.FreeSlotCount);
        Assert.Empty(scheduler.Running);
        Assert.Equal(2, scheduler.WaitingCount); // admitting #1 and 'queued' keep their place
        Assert.True(prefix.Prefill.LastLogits.IsInvalid);

        // Restarted candidates go first, ahead of what was already waiting.
        scheduler.RequeueFirst(involved);
        Assert.Equal([(running, 0), (running, 1), (admitting, 0)],
            scheduler.Admit().SelectMany(g => g.Members).Select(m => (m.Candidate.Request, m.Candidate.LocalIndex)));
    }

    [Fact]
    public void CancelledRequestsLeaveTheQueueAndTheBatch()
    {
        var scheduler = new EngineScheduler(slots: 2, sharePrefix: true);
        var cancelled = Request(PromptA, 3);
        var kept = Request(PromptB, 1);
        scheduler.Enqueue(Candidates(cancelled));
        scheduler.Enqueue(Candidates(kept));
        ActivateAll(scheduler, scheduler.Admit());
        cancelled.Cancelled = true;

        Assert.Equal([2], scheduler.RemoveCancelledWaiting().Select(c => c.LocalIndex));
        Assert.Equal(1, scheduler.WaitingCount);
        Assert.Equal([0, 1], scheduler.CancelledRows());
    }
}
