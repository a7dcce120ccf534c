using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading.Channels;
using MetaStone.Reasoning;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model.Generation;

/// <summary>Engine-wide settings.</summary>
public sealed record EngineOptions
{
    /// <summary>Sequences decoded together (KV cache slots).</summary>
    public int MaxBatch { get; init; } = 32;
    /// <summary>Prompt + response limit per sequence (clamped to the model's context window).</summary>
    public int MaxSequenceLength { get; init; } = 2048;
    /// <summary>Step rules for in-flight scoring; null disables scoring.</summary>
    public StepTokenSet? StepRules { get; init; }
    /// <summary>Tokens that end every sequence.</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    /// <summary>Prefill a prompt once and copy its KV rows to every candidate sharing it.</summary>
    public bool SharePrefix { get; init; } = true;
    /// <summary>Thread name (one engine per device).</summary>
    public string Name { get; init; } = "metastone-engine";
    /// <summary>
    /// Tries per candidate when an engine step fails. A failed prefill or decode step involves exactly the sequences
    /// it computed: they restart from their prompt with the same seed (same trajectory), queued sequences are not
    /// touched, other requests never see the error. From its second restart a candidate runs alone, so a fault that
    /// follows one sequence ends up failing only that sequence when its tries run out.
    /// </summary>
    public int MaxAttempts { get; init; } = 3;
    /// <summary>Test hook: called on the engine thread before each batched decode with the seeds of its rows; an
    /// exception thrown here is handled exactly like a native error in that step.</summary>
    internal Action<IReadOnlyList<long>>? FaultInjection { get; init; }
}

/// <summary>
/// The per-device generation engine: one dedicated thread owns the model, the KV cache and every tensor,
/// and runs continuous batching — candidate sequences from any number of requests join the running batch
/// between decode steps (up to <see cref="EngineOptions.MaxBatch"/>) and leave it when they finish or are
/// cancelled, freeing their slot at once. A prompt is prefilled once and its cache rows copied to all
/// candidates sharing it. The SPRM head scores each reasoning step from the hidden state the decode step
/// has already computed: no second forward pass.
/// </summary>
public sealed class GenerationEngine : IDisposable
{
    private readonly Qwen2ForCausalLM _model;
    private readonly SprmHead? _head;
    private readonly EngineOptions _options;
    private readonly KvCache _cache;
    private readonly Tensor _history; // [slots, maxLength] int64: each slot's tokens so far (repetition penalty); tail padded with its first token
    private readonly BlockingCollection<Action> _inbox = new();
    private readonly Thread _thread;
    private readonly CancellationTokenSource _shutdown = new();
    private readonly HashSet<int> _eos;
    private readonly int? _thinkEndId;

    // Engine-thread state.
    private readonly List<PendingCandidate> _pending = [];
    private readonly List<Sequence> _active = [];
    private readonly List<(PendingCandidate Candidate, int Slot)> _admitting = []; // taken from the queue, not yet active
    private readonly Stack<int> _freeSlots;
    private readonly Dictionary<PromptKey, SharedPrefix> _prefixes = [];
    private Tensor? _logits;   // [active, V] fp32, row i belongs to _active[i]
    private Tensor? _features; // [active, H] model dtype, hidden_states[-2] at each row's last position

    // Counters (written by the engine thread, read by anyone).
    private long _generated, _prefillComputed, _prefillReused, _decodeSteps, _stepsScored, _failedSteps, _restarted, _failedCandidates;
    private int _activeCount, _queuedCount;
    private double _tokensPerSecond;
    private long _rateWindowTokens;
    private readonly Stopwatch _rateWindow = Stopwatch.StartNew();

    public GenerationEngine(Qwen2ForCausalLM model, SprmHead? head, EngineOptions options)
    {
        _model = model;
        _head = head;
        int maxLength = Math.Min(options.MaxSequenceLength, model.MaxPositions);
        _options = options with { MaxSequenceLength = maxLength };
        if (options.MaxBatch < 1) throw new ArgumentOutOfRangeException(nameof(options), options.MaxBatch, "MaxBatch must be ≥ 1");
        if (options.MaxAttempts < 1) throw new ArgumentOutOfRangeException(nameof(options), options.MaxAttempts, "MaxAttempts must be ≥ 1");
        _cache = new KvCache(model.Config, options.MaxBatch, maxLength, model.Device, model.Dtype);
        _history = zeros([options.MaxBatch, maxLength], dtype: ScalarType.Int64, device: model.Device).DetachFromDisposeScope();
        _freeSlots = new Stack<int>(Enumerable.Range(0, options.MaxBatch).Reverse());
        _eos = [.. options.EosTokenIds];
        _thinkEndId = options.StepRules?.ThinkEndId;
        _thread = new Thread(Run) { IsBackground = true, Name = options.Name };
        _thread.Start();
    }

    public EngineOptions Options => _options;
    public Qwen2Config Config => _model.Config;
    public bool CanScore => _head is not null && _options.StepRules is not null;

    public EngineStats Stats => new()
    {
        ActiveSequences = Volatile.Read(ref _activeCount),
        QueuedSequences = Volatile.Read(ref _queuedCount),
        Slots = _options.MaxBatch,
        GeneratedTokens = Interlocked.Read(ref _generated),
        PrefillTokensComputed = Interlocked.Read(ref _prefillComputed),
        PrefillTokensReused = Interlocked.Read(ref _prefillReused),
        DecodeSteps = Interlocked.Read(ref _decodeSteps),
        StepsScored = Interlocked.Read(ref _stepsScored),
        FailedSteps = Interlocked.Read(ref _failedSteps),
        RestartedCandidates = Interlocked.Read(ref _restarted),
        FailedCandidates = Interlocked.Read(ref _failedCandidates),
        TokensPerSecond = Volatile.Read(ref _tokensPerSecond),
    };

    /// <summary>Generates every candidate of <paramref name="request"/>; results ordered by candidate.</summary>
    /// <remarks>Invalid requests throw here, synchronously, before anything is queued.</remarks>
    public Task<IReadOnlyList<Trajectory>> GenerateAsync(GenerationRequest request, CancellationToken cancellationToken = default)
        => Submit(request, updates: null, cancellationToken).Completion.Task;

    /// <summary>
    /// Generates several requests that the engine queues in one go, in the given order. Because nothing can slip in between
    /// them and admission is first-in first-out, the same requests on an idle engine see the same batches in every run, which is
    /// what makes an evaluation with a fixed seed reproducible (separate <see cref="GenerateAsync"/> calls race with the engine
    /// thread, so which of them share the first batches depends on timing, and batch composition changes float rounding).
    /// </summary>
    /// <returns>One task per request, in the order given.</returns>
    public IReadOnlyList<Task<IReadOnlyList<Trajectory>>> GenerateMany(IReadOnlyList<GenerationRequest> requests, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(requests);
        foreach (var request in requests) Validate(request);
        var states = requests.Select(r => CreateState(r, updates: null, cancellationToken)).ToList();
        Enqueue(states);
        return [.. states.Select(s => s.Completion.Task)];
    }

    /// <summary>Streams progress (started, steps, tokens if asked, finished) of every candidate of <paramref name="request"/>.</summary>
    public async IAsyncEnumerable<CandidateUpdate> StreamAsync(GenerationRequest request, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var channel = Channel.CreateUnbounded<CandidateUpdate>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var job = Submit(request, channel.Writer, cancellationToken);
        await foreach (var update in channel.Reader.ReadAllAsync(CancellationToken.None).ConfigureAwait(false))
            yield return update;
        await job.Completion.Task.ConfigureAwait(false); // surfaces cancellation and engine errors
    }

    private RequestState Submit(GenerationRequest request, ChannelWriter<CandidateUpdate>? updates, CancellationToken cancellationToken)
    {
        Validate(request);
        var state = CreateState(request, updates, cancellationToken);
        Enqueue([state]);
        return state;
    }

    private void Enqueue(IReadOnlyList<RequestState> states)
    {
        Interlocked.Add(ref _queuedCount, states.Sum(s => s.Request.Seeds.Count));
        Post(() =>
        {
            foreach (var state in states)
                for (int i = 0; i < state.Request.Seeds.Count; i++)
                    _pending.Add(new PendingCandidate(state, i));
        });
    }

    private RequestState CreateState(GenerationRequest request, ChannelWriter<CandidateUpdate>? updates, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_shutdown.IsCancellationRequested, this);
        var state = new RequestState(request, updates);
        if (cancellationToken.CanBeCanceled)
        {
            cancellationToken.ThrowIfCancellationRequested();
            state.Registration = cancellationToken.Register(() =>
            {
                state.Cancelled = true;
                Post(() => { }); // wake the engine so it drops the sequences now
            });
        }
        return state;
    }

    private void Validate(GenerationRequest request)
    {
        request.Sampling.Validate();
        if (request.PromptIds.Count == 0) throw new ArgumentException("the prompt is empty", nameof(request));
        if (request.Seeds.Count == 0) throw new ArgumentException("a request needs at least one candidate (seed)", nameof(request));
        if (request.PromptIds.Count >= _options.MaxSequenceLength)
            throw new ArgumentException($"prompt of {request.PromptIds.Count} tokens is longer than the context window: it must leave room for at least one generated token within {_options.MaxSequenceLength} tokens", nameof(request));
        int vocab = _model.Config.VocabSize;
        foreach (int id in request.PromptIds)
            if (id < 0 || id >= vocab) throw new ArgumentException($"prompt token id {id} is outside the vocabulary (0..{vocab - 1})", nameof(request));
    }

    private void Post(Action action)
    {
        try { _inbox.Add(action); }
        catch (InvalidOperationException) { throw new ObjectDisposedException(nameof(GenerationEngine)); }
    }

    // ---------------------------------------------------------------- engine thread

    private void Run()
    {
        try
        {
            while (!_shutdown.IsCancellationRequested)
            {
                // Sleep only when there is nothing to decode.
                if (_active.Count == 0 && _pending.Count == 0)
                {
                    Action first;
                    try { first = _inbox.Take(_shutdown.Token); }
                    catch (OperationCanceledException) { break; }
                    first();
                }
                while (_inbox.TryTake(out var action)) action();

                try
                {
                    using var scope = NewDisposeScope();
                    using var noGrad = no_grad();
                    DropCancelled();
                    Admit();
                    if (_active.Count > 0) Step();
                }
                catch (Exception e)
                {
                    // One failed step involves the sequences it was computing, never the queue or other work.
                    try { RecoverFromFailedStep(e); }
                    catch (Exception fatal) { FailEverything(new AggregateException(e, fatal)); }
                }
            }
        }
        finally
        {
            FailEverything(new ObjectDisposedException(nameof(GenerationEngine), "the generation engine was shut down"));
        }
    }

    private void DropCancelled()
    {
        _pending.RemoveAll(p =>
        {
            if (!p.Request.Cancelled) return false;
            Interlocked.Decrement(ref _queuedCount);
            p.Request.Finish(p.Index, null);
            return true;
        });
        if (_active.Any(s => s.Request.Cancelled))
        {
            var keep = new List<int>();
            for (int i = 0; i < _active.Count; i++)
            {
                if (_active[i].Request.Cancelled) Release(_active[i], null);
                else keep.Add(i);
            }
            KeepRows(keep);
        }
    }

    /// <summary>Moves waiting candidates into free slots; a prompt not already live is prefilled once.</summary>
    private void Admit()
    {
        if (_pending.Count == 0 || _freeSlots.Count == 0) return;
        // A candidate on its second restart or later runs alone (nothing joins it, it joins nothing).
        if (_active.Any(s => s.Solo)) return;
        bool solo = _pending[0].Attempts >= 2;
        if (solo && _active.Count > 0) return;
        var admitted = _admitting;
        int take = solo ? 1 : Math.Min(_pending.Count, _freeSlots.Count);
        if (!solo)
        {
            int firstSolo = _pending.FindIndex(p => p.Attempts >= 2);
            if (firstSolo >= 0) take = Math.Min(take, firstSolo);
        }
        for (int i = 0; i < take; i++) admitted.Add((_pending[i], _freeSlots.Pop()));
        _pending.RemoveRange(0, take);
        Interlocked.Add(ref _queuedCount, -take);

        var newLogits = new List<Tensor>();
        var newFeatures = new List<Tensor>();
        // Without prefix sharing every candidate is its own group (and pays its own prefill).
        foreach (var group in admitted.GroupBy(a => _options.SharePrefix ? (object)new PromptKey(a.Candidate.Request.Request.PromptIds) : a))
        {
            var members = group.ToList();
            var key = new PromptKey(members[0].Candidate.Request.Request.PromptIds);
            int promptLength = key.Ids.Count;
            int memberIndex = 0;
            if (!_options.SharePrefix || !_prefixes.TryGetValue(key, out var prefix))
            {
                // Prefill into the first member's slot; it becomes the prefix source for the others.
                var (candidate, slot) = members[0];
                var ids = tensor(key.Ids.Select(i => (long)i).ToArray(), device: _model.Device).unsqueeze(0);
                var output = _model.Prefill(ids, _cache, slot, 0);
                Interlocked.Add(ref _prefillComputed, promptLength);
                // History row: the prompt, then its first token repeated (a token that is in the sequence anyway).
                var history = TorchScalars.Full(_options.MaxSequenceLength, key.Ids[0], ScalarType.Int64, _model.Device);
                history.narrow(0, 0, promptLength).copy_(ids.squeeze(0));
                prefix = new SharedPrefix(key, output.Logits.squeeze(0).DetachFromDisposeScope(),
                    output.SprmFeatures.squeeze(0).DetachFromDisposeScope(), history.DetachFromDisposeScope());
                if (_options.SharePrefix) _prefixes[key] = prefix;
                Activate(candidate, slot, prefix);
                memberIndex = 1;
            }
            var rest = members.Skip(memberIndex).ToList();
            if (rest.Count > 0)
            {
                _cache.CopyPrefix(prefix.Slots.First(), rest.Select(m => m.Slot).ToList(), promptLength);
                Interlocked.Add(ref _prefillReused, (long)promptLength * rest.Count);
                foreach (var (candidate, slot) in rest) Activate(candidate, slot, prefix);
            }
            foreach (var _ in members)
            {
                newLogits.Add(prefix.LastLogits.unsqueeze(0));
                newFeatures.Add(prefix.LastFeatures.unsqueeze(0));
            }
        }
        // New rows join the batch after the running ones, in admission order.
        var logits = cat(newLogits, 0);
        var features = cat(newFeatures, 0);
        ReplaceRows(_logits is null ? logits : cat([_logits, logits], 0), _features is null ? features : cat([_features, features], 0));
        admitted.Clear();
    }

    private void Activate(PendingCandidate candidate, int slot, SharedPrefix prefix)
    {
        var request = candidate.Request.Request;
        _history[slot].copy_(prefix.History);
        var tracker = new StepTracker(_options.StepRules ?? new StepTokenSet(new HashSet<int>(), null, null));
        foreach (int id in request.PromptIds) tracker.Observe(id);
        tracker.BeginResponse();
        prefix.Slots.Add(slot);
        var sequence = new Sequence(candidate.Request, candidate.Index, slot, prefix, tracker,
            new Random(unchecked((int)(request.Seeds[candidate.Index] ^ (request.Seeds[candidate.Index] >> 32)))))
        {
            Attempts = candidate.Attempts,
            Solo = candidate.Attempts >= 2,
        };
        if (request.Sampling.ThinkingBudget == 0 && _thinkEndId is int te && tracker.InsideThinking)
        {
            sequence.ForcedNext = te;
            sequence.ThinkingForced = true;
        }
        _active.Add(sequence);
        Interlocked.Increment(ref _activeCount);
        candidate.Request.Emit(new CandidateUpdate(CandidateUpdateKind.Started, request.FirstCandidateIndex + candidate.Index));
    }

    /// <summary>Sample one token for every active sequence, score steps, retire finished ones, decode the rest.</summary>
    private void Step()
    {
        var rows = new RowSampling[_active.Count];
        for (int i = 0; i < rows.Length; i++)
        {
            var s = _active[i];
            var o = s.Request.Request.Sampling;
            rows[i] = new RowSampling(o.Temperature, o.TopP, o.TopK, o.RepetitionPenalty, s.Random.NextDouble());
        }
        Tensor? history = null;
        if (rows.Any(r => r.RepetitionPenalty != 1.0))
        {
            int longest = _active.Max(s => s.Position);
            history = _history.narrow(1, 0, longest).index_select(0, tensor(_active.Select(s => (long)s.Slot).ToArray(), device: _model.Device));
        }
        long[] sampled = TokenSampler.Sample(_logits!, history, rows);

        var stepRows = new List<(int Row, Sequence Seq, int Position, int ResponseIndex)>();
        var finished = new List<(int Row, FinishReason Reason)>();
        for (int i = 0; i < _active.Count; i++)
        {
            var s = _active[i];
            int token = s.ForcedNext ?? (int)sampled[i];
            s.ForcedNext = null;
            int position = s.Position; // where this token sits in prompt + response
            bool wasThinking = s.Tracker.InsideThinking;
            bool scored = s.Tracker.Observe(token);
            s.Response.Add(token);
            s.Position++;
            if (wasThinking && s.Tracker.InsideThinking) s.ThinkingTokens++;
            else if (!s.Tracker.InsideThinking && (s.Tracker.ThinkingEnded && token != _thinkEndId)) s.AnswerTokens++;
            if (scored && CanScore && s.Request.Request.ScoreSteps)
                stepRows.Add((i, s, position, s.Response.Count - 1));
            if (s.Request.Request.StreamTokens)
                s.Request.Emit(new CandidateUpdate(CandidateUpdateKind.Token, s.CandidateIndex, TokenId: token));

            var sampling = s.Request.Request.Sampling;
            if (_eos.Contains(token) || s.Request.Request.StopTokenIds.Contains(token)) finished.Add((i, FinishReason.Stop));
            else if (s.Response.Count >= sampling.MaxNewTokens || s.Position >= _options.MaxSequenceLength) finished.Add((i, FinishReason.Length));
            else if (sampling.AnswerBudget is int ab && s.AnswerTokens >= ab) finished.Add((i, FinishReason.Length));
            else if (sampling.ThinkingBudget is int tb && s.Tracker.InsideThinking && s.ThinkingTokens >= tb && _thinkEndId is int te)
            {
                s.ForcedNext = te; // budget spent: close the thought, the answer follows under its own limit
                s.ThinkingForced = true;
            }
        }

        if (stepRows.Count > 0) ScoreSteps(stepRows);
        Interlocked.Add(ref _generated, _active.Count);
        UpdateRate(_active.Count);

        // Record the new tokens in the history (repetition penalty) in one op.
        var flat = _active.Select(s => (long)s.Slot * _options.MaxSequenceLength + (s.Position - 1)).ToArray();
        _history.view(-1).index_copy_(0, tensor(flat, device: _model.Device), tensor(_active.Select(s => (long)s.Response[^1]).ToArray(), device: _model.Device));

        var finishedRows = finished.ToDictionary(f => f.Row, f => f.Reason);
        var keep = new List<int>();
        for (int i = 0; i < _active.Count; i++)
        {
            if (finishedRows.TryGetValue(i, out var reason)) Release(_active[i], reason);
            else keep.Add(i);
        }
        var running = keep.Select(i => _active[i]).ToList();
        _active.Clear();
        _active.AddRange(running);
        if (running.Count == 0) { ReplaceRows(null, null); return; }

        _options.FaultInjection?.Invoke(running.Select(s => s.Request.Request.Seeds[s.LocalIndex]).ToList());
        var inputIds = tensor(running.Select(s => (long)s.Response[^1]).ToArray(), device: _model.Device);
        var slots = running.Select(s => (long)s.Slot).ToArray();
        var positions = running.Select(s => (long)(s.Position - 1)).ToArray();
        var output = _model.Decode(inputIds, _cache, slots, positions);
        Interlocked.Increment(ref _decodeSteps);
        ReplaceRows(output.Logits, output.SprmFeatures);
    }

    private void ScoreSteps(List<(int Row, Sequence Seq, int Position, int ResponseIndex)> stepRows)
    {
        var index = tensor(stepRows.Select(r => (long)r.Row).ToArray(), device: _model.Device);
        var logits = _head!.Logits(_features!.index_select(0, index)).cpu().data<float>().ToArray();
        for (int j = 0; j < stepRows.Count; j++)
        {
            var (_, seq, position, responseIndex) = stepRows[j];
            var step = new StepScore(position, responseIndex, logits[j]);
            seq.Steps.Add(step);
            seq.Request.Emit(new CandidateUpdate(CandidateUpdateKind.Step, seq.CandidateIndex, Step: step));
        }
        Interlocked.Add(ref _stepsScored, stepRows.Count);
    }

    private void UpdateRate(int tokens)
    {
        _rateWindowTokens += tokens;
        double seconds = _rateWindow.Elapsed.TotalSeconds;
        if (seconds >= 1.0)
        {
            Volatile.Write(ref _tokensPerSecond, _rateWindowTokens / seconds);
            _rateWindowTokens = 0;
            _rateWindow.Restart();
        }
    }

    /// <summary>Frees a sequence's slot and reports it (null reason = cancelled, reported as cancellation).</summary>
    private void Release(Sequence s, FinishReason? reason)
    {
        _freeSlots.Push(s.Slot);
        Interlocked.Decrement(ref _activeCount); // before completion, so a caller who sees the result sees the slot free
        var prefix = s.Prefix;
        // Any other live sequence of the same prompt still holds its rows and serves late joiners.
        prefix.Slots.Remove(s.Slot);
        if (prefix.Slots.Count == 0)
        {
            if (_prefixes.TryGetValue(prefix.Key, out var live) && live == prefix) _prefixes.Remove(prefix.Key);
            prefix.Dispose();
        }
        if (reason is null) { s.Request.Finish(s.LocalIndex, null); return; }
        var result = new Trajectory
        {
            CandidateIndex = s.CandidateIndex,
            Seed = s.Request.Request.Seeds[s.LocalIndex],
            PromptTokens = s.Request.Request.PromptIds.Count,
            ResponseIds = [.. s.Response],
            FinishReason = reason.Value,
            ThinkingTokens = s.ThinkingTokens,
            AnswerTokens = s.AnswerTokens,
            ThinkingForcedClosed = s.ThinkingForced,
            Steps = s.Steps,
        };
        s.Request.Emit(new CandidateUpdate(CandidateUpdateKind.Finished, s.CandidateIndex, Result: result));
        s.Request.Finish(s.LocalIndex, result);
    }

    private void KeepRows(List<int> keep)
    {
        var running = keep.Select(i => _active[i]).ToList();
        _active.Clear();
        _active.AddRange(running);
        if (running.Count == 0) { ReplaceRows(null, null); return; }
        var index = tensor(keep.Select(i => (long)i).ToArray(), device: _model.Device);
        ReplaceRows(_logits!.index_select(0, index), _features!.index_select(0, index));
    }

    private void ReplaceRows(Tensor? logits, Tensor? features)
    {
        // Rows outlive the per-iteration dispose scope; the previous ones are freed here.
        var oldLogits = _logits;
        var oldFeatures = _features;
        _logits = logits?.DetachFromDisposeScope();
        _features = features?.DetachFromDisposeScope();
        if (oldLogits is not null && !ReferenceEquals(oldLogits, _logits)) oldLogits.Dispose();
        if (oldFeatures is not null && !ReferenceEquals(oldFeatures, _features)) oldFeatures.Dispose();
    }

    /// <summary>
    /// A prefill or decode step threw. The sequences it involved (every active row, and candidates being admitted)
    /// have partial state in the cache and logits, so they restart from their prompt with the same seed (the same
    /// trajectory: a candidate depends only on its seed); a candidate out of tries fails, and with it only its own
    /// request. Queued candidates keep their place; the engine goes on.
    /// </summary>
    private void RecoverFromFailedStep(Exception error)
    {
        Interlocked.Increment(ref _failedSteps);
        var involved = _active.Select(s => new PendingCandidate(s.Request, s.LocalIndex, s.Attempts))
            .Concat(_admitting.Select(a => a.Candidate) // an admission that threw may have activated some already
                .Where(c => !_active.Any(s => s.Request == c.Request && s.LocalIndex == c.Index))).ToList();
        foreach (var prefix in _prefixes.Values.Concat(_active.Select(a => a.Prefix)).Distinct()) prefix.Dispose();
        _prefixes.Clear();
        _active.Clear();
        _admitting.Clear();
        Volatile.Write(ref _activeCount, 0);
        _freeSlots.Clear();
        for (int slot = _options.MaxBatch - 1; slot >= 0; slot--) _freeSlots.Push(slot);
        ReplaceRows(null, null);

        var retry = new List<PendingCandidate>();
        foreach (var c in involved)
        {
            if (c.Request.Cancelled) { c.Request.Finish(c.Index, null); continue; }
            if (c.Attempts + 1 >= _options.MaxAttempts)
            {
                Interlocked.Increment(ref _failedCandidates);
                c.Request.FailCandidate(new InvalidOperationException(
                    $"candidate {c.Request.Request.FirstCandidateIndex + c.Index} failed in {_options.MaxAttempts} engine attempt(s): {FirstLine(error.Message)}", error));
                continue;
            }
            Interlocked.Increment(ref _restarted);
            c.Request.Emit(new CandidateUpdate(CandidateUpdateKind.Restarted, c.Request.Request.FirstCandidateIndex + c.Index));
            retry.Add(c with { Attempts = c.Attempts + 1 });
        }
        // Retried candidates go first: they were admitted before anything still queued.
        _pending.InsertRange(0, retry);
        Interlocked.Add(ref _queuedCount, retry.Count);
    }

    private static string FirstLine(string message)
    {
        int newline = message.IndexOf('\n');
        return (newline < 0 ? message : message[..newline]).Trim();
    }

    private void FailEverything(Exception error)
    {
        foreach (var s in _active) s.Request.Fail(error);
        foreach (var p in _pending) p.Request.Fail(error);
        foreach (var a in _admitting) a.Candidate.Request.Fail(error);
        _admitting.Clear();
        foreach (var prefix in _prefixes.Values.Concat(_active.Select(a => a.Prefix)).Distinct()) prefix.Dispose();
        _active.Clear();
        _pending.Clear();
        Volatile.Write(ref _activeCount, 0);
        Volatile.Write(ref _queuedCount, 0);
        _prefixes.Clear();
        _freeSlots.Clear();
        for (int slot = _options.MaxBatch - 1; slot >= 0; slot--) _freeSlots.Push(slot);
        ReplaceRows(null, null);
    }

    public void Dispose()
    {
        if (_shutdown.IsCancellationRequested) return;
        _shutdown.Cancel();
        _inbox.CompleteAdding();
        _thread.Join();
        _cache.Dispose();
        _history.Dispose();
        _shutdown.Dispose();
    }

    // ---------------------------------------------------------------- bookkeeping types

    private readonly record struct PendingCandidate(RequestState Request, int Index, int Attempts = 0);

    /// <summary>Prompt identity for prefix sharing (content equality, cached hash).</summary>
    private sealed class PromptKey(IReadOnlyList<int> ids) : IEquatable<PromptKey>
    {
        private readonly int _hash = ids.Aggregate(17, (h, id) => unchecked(h * 31 + id));
        public IReadOnlyList<int> Ids { get; } = ids;
        public bool Equals(PromptKey? other) => other is not null && other._hash == _hash && other.Ids.SequenceEqual(Ids);
        public override bool Equals(object? obj) => Equals(obj as PromptKey);
        public override int GetHashCode() => _hash;
    }

    /// <summary>A prompt that is live in the cache: its last-position outputs and which slot holds its rows.</summary>
    private sealed class SharedPrefix(PromptKey key, Tensor lastLogits, Tensor lastFeatures, Tensor history) : IDisposable
    {
        public PromptKey Key { get; } = key;
        public Tensor LastLogits { get; } = lastLogits;
        public Tensor LastFeatures { get; } = lastFeatures;
        public Tensor History { get; } = history;
        /// <summary>Slots of live sequences whose cache rows [0, prompt length) hold this prompt.</summary>
        public HashSet<int> Slots { get; } = [];

        public void Dispose()
        {
            LastLogits.Dispose();
            LastFeatures.Dispose();
            History.Dispose();
        }
    }

    private sealed class Sequence(RequestState request, int localIndex, int slot, SharedPrefix prefix, StepTracker tracker, Random random)
    {
        public RequestState Request { get; } = request;
        public int LocalIndex { get; } = localIndex;
        public int CandidateIndex => Request.Request.FirstCandidateIndex + LocalIndex;
        public int Slot { get; } = slot;
        public SharedPrefix Prefix { get; } = prefix;
        public StepTracker Tracker { get; } = tracker;
        public Random Random { get; } = random;
        public List<int> Response { get; } = [];
        public List<StepScore> Steps { get; } = [];
        public int Position { get; set; } = request.Request.PromptIds.Count;
        public int ThinkingTokens { get; set; }
        public int AnswerTokens { get; set; }
        public int? ForcedNext { get; set; }
        public bool ThinkingForced { get; set; }
        /// <summary>Earlier tries that ended in a failed step.</summary>
        public int Attempts { get; init; }
        /// <summary>Runs alone (second restart or later).</summary>
        public bool Solo { get; init; }
    }

    private sealed class RequestState(GenerationRequest request, ChannelWriter<CandidateUpdate>? updates)
    {
        private readonly Trajectory?[] _results = new Trajectory?[request.Seeds.Count];
        private int _remaining = request.Seeds.Count;

        public GenerationRequest Request { get; } = request;
        public TaskCompletionSource<IReadOnlyList<Trajectory>> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public volatile bool Cancelled;
        public CancellationTokenRegistration Registration;

        public void Emit(CandidateUpdate update) => updates?.TryWrite(update);

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
}
