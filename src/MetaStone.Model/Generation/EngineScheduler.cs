namespace MetaStone.Model.Generation;

/// <summary>Prompt identity for prefix sharing (content equality, cached hash).</summary>
internal sealed class PromptKey(IReadOnlyList<int> ids) : IEquatable<PromptKey>
{
    private readonly int _hash = ids.Aggregate(17, (h, id) => unchecked(h * 31 + id));
    public IReadOnlyList<int> Ids { get; } = ids;
    public bool Equals(PromptKey? other) => other is not null && other._hash == _hash && other.Ids.SequenceEqual(Ids);
    public override bool Equals(object? obj) => Equals(obj as PromptKey);
    public override int GetHashCode() => _hash;
}

/// <summary>A prompt that is live in the KV cache: which slots hold its rows, and what the runner kept of its prefill.</summary>
internal sealed class SharedPrefix(PromptKey key, PrefilledPrompt prefill) : IDisposable
{
    public PromptKey Key { get; } = key;
    /// <summary>The prompt's last-position outputs and history row (runner-owned tensors, freed with the entry).</summary>
    public PrefilledPrompt Prefill { get; } = prefill;
    /// <summary>Slots of live sequences whose cache rows [0, prompt length) hold this prompt.</summary>
    public HashSet<int> Slots { get; } = [];

    public void Dispose() => Prefill.Dispose();
}

/// <summary>Candidates with the same prompt admitted in one step, in admission order, each with the slot it gets.</summary>
/// <param name="LivePrefix">The prompt is already live in the cache (its rows are copied), or null (the first member prefills it).</param>
internal sealed record AdmissionGroup(PromptKey Prompt, IReadOnlyList<(QueuedCandidate Candidate, int Slot)> Members, SharedPrefix? LivePrefix);

/// <summary>
/// The engine's scheduler: the waiting queue, the free KV cache slots, the running sequences (row i of the batch is
/// <see cref="Running"/>[i]) and the table of shared prefixes. It decides, between decode steps, which waiting candidates
/// join (first in, first out, up to the free slots; a candidate on its second restart runs alone), which rows leave, and
/// what a failed step involved. It touches no tensor and no model: the engine carries its decisions to the model runner.
/// Engine thread only.
/// </summary>
internal sealed class EngineScheduler(int slots, bool sharePrefix)
{
    private readonly List<QueuedCandidate> _waiting = [];
    private readonly List<RunningSequence> _running = [];
    private readonly List<(QueuedCandidate Candidate, int Slot)> _admitting = []; // taken from the queue, not yet running
    private readonly Stack<int> _freeSlots = new(Enumerable.Range(0, slots).Reverse());
    private readonly Dictionary<PromptKey, SharedPrefix> _prefixes = [];

    public int Slots { get; } = slots;
    public IReadOnlyList<RunningSequence> Running => _running;
    public int WaitingCount => _waiting.Count;
    public int FreeSlotCount => _freeSlots.Count;
    public bool IsIdle => _running.Count == 0 && _waiting.Count == 0;

    public void Enqueue(IEnumerable<QueuedCandidate> candidates) => _waiting.AddRange(candidates);

    /// <summary>Puts candidates back at the head of the queue (they were admitted before anything still waiting).</summary>
    public void RequeueFirst(IReadOnlyList<QueuedCandidate> candidates) => _waiting.InsertRange(0, candidates);

    /// <summary>Removes waiting candidates of cancelled requests.</summary>
    public List<QueuedCandidate> RemoveCancelledWaiting()
    {
        var removed = _waiting.Where(c => c.Request.Cancelled).ToList();
        if (removed.Count > 0) _waiting.RemoveAll(c => c.Request.Cancelled);
        return removed;
    }

    /// <summary>Rows of running sequences whose request was cancelled (to be retired).</summary>
    public List<int> CancelledRows()
    {
        var rows = new List<int>();
        for (int i = 0; i < _running.Count; i++)
            if (_running[i].Request.Cancelled) rows.Add(i);
        return rows;
    }

    /// <summary>
    /// Takes the candidates that join the batch now and gives each a slot, grouped by prompt (without prefix sharing each
    /// candidate is its own group and pays its own prefill). Empty when the queue is empty, no slot is free, or a
    /// candidate running alone holds the batch. Every returned candidate must then be <see cref="Activate"/>d (or the step
    /// fails, and <see cref="ResetAfterFailedStep"/> counts it as involved).
    /// </summary>
    public IReadOnlyList<AdmissionGroup> Admit()
    {
        if (_waiting.Count == 0 || _freeSlots.Count == 0) return [];
        // A candidate on its second restart or later runs alone (nothing joins it, it joins nothing).
        if (_running.Any(s => s.RunsAlone)) return [];
        bool alone = _waiting[0].RunsAlone;
        if (alone && _running.Count > 0) return [];
        int take = alone ? 1 : Math.Min(_waiting.Count, _freeSlots.Count);
        if (!alone)
        {
            int firstAlone = _waiting.FindIndex(c => c.RunsAlone);
            if (firstAlone >= 0) take = Math.Min(take, firstAlone);
        }
        for (int i = 0; i < take; i++) _admitting.Add((_waiting[i], _freeSlots.Pop()));
        _waiting.RemoveRange(0, take);

        var groups = new List<AdmissionGroup>();
        foreach (var group in _admitting.GroupBy(a => sharePrefix ? (object)new PromptKey(a.Candidate.Request.Request.PromptIds) : a))
        {
            var members = group.ToList();
            var prompt = new PromptKey(members[0].Candidate.Request.Request.PromptIds);
            var live = sharePrefix && _prefixes.TryGetValue(prompt, out var prefix) ? prefix : null;
            groups.Add(new AdmissionGroup(prompt, members, live));
        }
        return groups;
    }

    /// <summary>A prompt just prefilled: later candidates (of any request) with the same prompt copy its rows while it is live.</summary>
    public void AddPrefix(SharedPrefix prefix)
    {
        if (sharePrefix) _prefixes[prefix.Key] = prefix;
    }

    /// <summary>An admitted candidate whose slot now holds its prompt becomes the batch's last row.</summary>
    public RunningSequence Activate(QueuedCandidate candidate, int slot, SharedPrefix prefix)
    {
        prefix.Slots.Add(slot);
        var sequence = new RunningSequence(candidate, slot, prefix);
        _running.Add(sequence);
        return sequence;
    }

    /// <summary>The admission ran to the end: every admitted candidate is running.</summary>
    public void AdmissionDone() => _admitting.Clear();

    /// <summary>
    /// Removes the given rows from the batch, frees their slots and retires a prompt whose last holder left (its runner
    /// state is disposed). The remaining rows keep their order.
    /// </summary>
    /// <returns>The retired sequences, in row order.</returns>
    public List<RunningSequence> Retire(IReadOnlyList<int> rows)
    {
        var retired = new List<RunningSequence>(rows.Count);
        if (rows.Count == 0) return retired;
        var leaving = rows.ToHashSet();
        var staying = new List<RunningSequence>(_running.Count - rows.Count);
        for (int i = 0; i < _running.Count; i++)
        {
            var sequence = _running[i];
            if (!leaving.Contains(i)) { staying.Add(sequence); continue; }
            retired.Add(sequence);
            _freeSlots.Push(sequence.Slot);
            // Any other live sequence of the same prompt still holds its rows and serves late joiners.
            var prefix = sequence.Prefix;
            prefix.Slots.Remove(sequence.Slot);
            if (prefix.Slots.Count == 0)
            {
                if (_prefixes.TryGetValue(prefix.Key, out var live) && live == prefix) _prefixes.Remove(prefix.Key);
                prefix.Dispose();
            }
        }
        _running.Clear();
        _running.AddRange(staying);
        return retired;
    }

    /// <summary>
    /// A prefill or decode step threw: the sequences it involved (every running row, and candidates being admitted) have
    /// partial state in the cache and rows, so the scheduler forgets them, frees every slot and prefix, and hands them back
    /// as candidates to restart or fail. Waiting candidates keep their place.
    /// </summary>
    public List<QueuedCandidate> ResetAfterFailedStep()
    {
        var involved = _running.Select(s => s.Requeued())
            .Concat(_admitting.Select(a => a.Candidate) // an admission that threw may have activated some already
                .Where(c => !_running.Any(s => s.Request == c.Request && s.LocalIndex == c.LocalIndex))).ToList();
        ClearBatch();
        return involved;
    }

    /// <summary>Forgets everything (the engine is failing or shutting down) and returns every request it held.</summary>
    public List<GenerationRequestState> TakeAll()
    {
        var requests = _running.Select(s => s.Request).Concat(_waiting.Select(c => c.Request))
            .Concat(_admitting.Select(a => a.Candidate.Request)).Distinct().ToList();
        _waiting.Clear();
        ClearBatch();
        return requests;
    }

    private void ClearBatch()
    {
        foreach (var prefix in _prefixes.Values.Concat(_running.Select(s => s.Prefix)).Distinct()) prefix.Dispose();
        _prefixes.Clear();
        _running.Clear();
        _admitting.Clear();
        _freeSlots.Clear();
        for (int slot = Slots - 1; slot >= 0; slot--) _freeSlots.Push(slot);
    }
}
