using System.Collections.Concurrent;
using System.Threading.Channels;
using MetaStone.Reasoning.Sequences;
using static TorchSharp.torch;

namespace MetaStone.Model.Generation;

/// <summary>
/// The per-device generation engine: one dedicated thread owns the model, the KV cache and every tensor, and runs
/// continuous batching — candidate sequences from any number of requests join the running batch between decode steps
/// (up to <see cref="EngineOptions.MaxBatch"/>) and leave it when they finish or are cancelled, freeing their slot at
/// once. A prompt is prefilled once and its cache rows copied to all candidates sharing it. The SPRM head scores each
/// reasoning step from the hidden state the decode step has already computed: no second forward pass.
/// </summary>
/// <remarks>
/// This class is the loop that wires three parts, vLLM-style: the <see cref="EngineScheduler"/> (queue, free slots,
/// shared prefixes; what joins, runs and leaves each step), the <see cref="ModelRunner"/> (prefill, decode, KV cache,
/// batch rows, sampling; knows no requests) and, per sequence, the pure <see cref="SequencePolicy"/> (budget forcing,
/// stop rules, limits, step tracking). It keeps the inbox, request completion, failure restarts and the stats.
/// </remarks>
public sealed class GenerationEngine : IDisposable
{
    private readonly Qwen2ForCausalLM _model;
    private readonly EngineOptions _options;
    private readonly IReadOnlySet<int> _eos;
    private readonly BlockingCollection<Action> _inbox = new();
    private readonly Thread _thread;
    private readonly CancellationTokenSource _shutdown = new();
    private readonly EngineCounters _counters = new();
    // Engine-thread state.
    private readonly EngineScheduler _scheduler;
    private readonly ModelRunner _runner;

    public GenerationEngine(Qwen2ForCausalLM model, SprmHead? head, EngineOptions options)
    {
        _model = model;
        int maxLength = Math.Min(options.MaxSequenceLength, model.MaxPositions);
        _options = options with { MaxSequenceLength = maxLength };
        if (options.MaxBatch < 1) throw new ArgumentOutOfRangeException(nameof(options), options.MaxBatch, "MaxBatch must be ≥ 1");
        if (options.MaxAttempts < 1) throw new ArgumentOutOfRangeException(nameof(options), options.MaxAttempts, "MaxAttempts must be ≥ 1");
        _runner = new ModelRunner(model, head, options.MaxBatch, maxLength);
        _scheduler = new EngineScheduler(options.MaxBatch, options.SharePrefix);
        _eos = new HashSet<int>(options.EosTokenIds);
        _thread = new Thread(Run) { IsBackground = true, Name = options.Name };
        _thread.Start();
    }

    public EngineOptions Options => _options;
    public Qwen2Config Config => _model.Config;
    public bool CanScore => _runner.HasHead && _options.StepRules is not null;

    public EngineStats Stats => _counters.Snapshot(_options.MaxBatch);

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

    private GenerationRequestState Submit(GenerationRequest request, ChannelWriter<CandidateUpdate>? updates, CancellationToken cancellationToken)
    {
        Validate(request);
        var state = CreateState(request, updates, cancellationToken);
        Enqueue([state]);
        return state;
    }

    private void Enqueue(IReadOnlyList<GenerationRequestState> states)
    {
        _counters.AddQueued(states.Sum(s => s.Request.Seeds.Count));
        Post(() =>
        {
            foreach (var state in states)
                _scheduler.Enqueue(Enumerable.Range(0, state.Request.Seeds.Count).Select(i => new QueuedCandidate(state, i)));
        });
    }

    private GenerationRequestState CreateState(GenerationRequest request, ChannelWriter<CandidateUpdate>? updates, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_shutdown.IsCancellationRequested, this);
        var state = new GenerationRequestState(request, SequenceRulesOf(request), updates);
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

    /// <summary>The per-sequence policy's rules for every candidate of <paramref name="request"/>.</summary>
    private SequenceRules SequenceRulesOf(GenerationRequest request)
    {
        var stops = new HashSet<int>(_eos);
        stops.UnionWith(request.StopTokenIds);
        return new SequenceRules
        {
            StepRules = _options.StepRules,
            StopTokenIds = stops,
            MaxNewTokens = request.Sampling.MaxNewTokens,
            MaxSequenceLength = _options.MaxSequenceLength,
            ThinkingBudget = request.Sampling.ThinkingBudget,
            AnswerBudget = request.Sampling.AnswerBudget,
            ScoreSteps = CanScore && request.ScoreSteps,
        }.Validated();
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
                if (_scheduler.IsIdle)
                {
                    Action first;
                    try { first = _inbox.Take(_shutdown.Token); }
                    catch (OperationCanceledException) { break; }
                    // Dispose cancels and then completes the inbox; Take on a completed, empty inbox throws this instead
                    // of seeing the cancellation (it crashed a test host once: an unhandled exception on this thread).
                    catch (InvalidOperationException) when (_inbox.IsAddingCompleted) { break; }
                    first();
                }
                while (_inbox.TryTake(out var action)) action();

                try
                {
                    using var scope = NewDisposeScope();
                    using var noGrad = no_grad();
                    DropCancelled();
                    Admit();
                    if (_scheduler.Running.Count > 0)
                    {
                        long stepStart = System.Diagnostics.Stopwatch.GetTimestamp();
                        Step();
                        var rest = _options.MinDecodeStep - System.Diagnostics.Stopwatch.GetElapsedTime(stepStart);
                        if (rest > TimeSpan.Zero) _shutdown.Token.WaitHandle.WaitOne(rest);
                    }
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
        foreach (var candidate in _scheduler.RemoveCancelledWaiting())
        {
            _counters.AddQueued(-1);
            candidate.Request.Finish(candidate.LocalIndex, null);
        }
        var cancelledRows = _scheduler.CancelledRows();
        if (cancelledRows.Count == 0) return;
        var keep = Enumerable.Range(0, _scheduler.Running.Count).Except(cancelledRows).ToList();
        foreach (var sequence in _scheduler.Retire(cancelledRows)) Complete(sequence);
        _runner.KeepRows(keep);
    }

    /// <summary>Carries the scheduler's admission to the runner: a prompt not already live is prefilled once into its
    /// first member's slot, the other members copy its cache rows; every new row starts from the prompt's last outputs.</summary>
    private void Admit()
    {
        var groups = _scheduler.Admit();
        if (groups.Count == 0) return;
        _counters.AddQueued(-groups.Sum(g => g.Members.Count));
        var newRows = new List<PrefilledPrompt>();
        foreach (var group in groups)
        {
            int promptLength = group.Prompt.Ids.Count;
            var prefix = group.LivePrefix;
            int firstCopy = 0; // members from here on copy the prompt's cache rows
            if (prefix is null)
            {
                var (candidate, slot) = group.Members[0];
                prefix = new SharedPrefix(group.Prompt, _runner.Prefill(group.Prompt.Ids, slot));
                _counters.AddPrefill(computed: promptLength, reused: 0);
                _scheduler.AddPrefix(prefix);
                Start(candidate, slot, prefix);
                firstCopy = 1;
            }
            var rest = group.Members.Skip(firstCopy).ToList();
            if (rest.Count > 0)
            {
                _runner.CopyPrompt(prefix.Slots.First(), rest.Select(m => m.Slot).ToList(), promptLength);
                _counters.AddPrefill(computed: 0, reused: (long)promptLength * rest.Count);
                foreach (var (candidate, slot) in rest) Start(candidate, slot, prefix);
            }
            for (int i = 0; i < group.Members.Count; i++) newRows.Add(prefix.Prefill);
        }
        // New rows join the batch after the running ones, in admission order.
        _runner.AppendRows(newRows);
        _scheduler.AdmissionDone();
    }

    private void Start(QueuedCandidate candidate, int slot, SharedPrefix prefix)
    {
        _runner.StartSlot(slot, prefix.Prefill);
        var sequence = _scheduler.Activate(candidate, slot, prefix);
        _counters.AddActive(1);
        candidate.Request.Emit(new CandidateUpdate(CandidateUpdateKind.Started, sequence.CandidateIndex));
    }

    /// <summary>Samples one token for every running sequence, lets each policy take it, scores the steps it ends, retires
    /// finished sequences and decodes the rest.</summary>
    private void Step()
    {
        var running = _scheduler.Running;
        int count = running.Count;
        using var hostKernelStep = _model.HostKernelStep(count);
        var rows = new RowSampling[count];
        var slots = new long[count];
        int longest = 0;
        for (int i = 0; i < count; i++)
        {
            var s = running[i];
            var o = s.Request.Request.Sampling;
            // One draw per row per step, forced token or not: the random stream depends on the seed alone.
            rows[i] = new RowSampling(o.Temperature, o.TopP, o.TopK, o.RepetitionPenalty, s.Random.NextDouble());
            slots[i] = s.Slot;
            longest = Math.Max(longest, s.Policy.Position);
        }
        long[] sampled = _runner.Sample(rows, slots, longest);

        var tokens = new long[count];
        var positions = new long[count];
        var stepRows = new List<(int Row, TokenDecision Decision)>();
        var finishedRows = new List<int>();
        for (int i = 0; i < count; i++)
        {
            var s = running[i];
            var decision = s.Policy.Advance((int)sampled[i]);
            tokens[i] = decision.Token;
            positions[i] = decision.Position;
            if (decision.EndsStep) stepRows.Add((i, decision));
            if (s.Request.Request.StreamTokens)
                s.Request.Emit(new CandidateUpdate(CandidateUpdateKind.Token, s.CandidateIndex, TokenId: decision.Token));
            if (decision.End is not null) finishedRows.Add(i);
        }
        if (stepRows.Count > 0) ScoreSteps(stepRows);
        _counters.AddGenerated(count);
        _runner.RecordTokens(slots, positions, tokens); // the new tokens enter the history (repetition penalty)

        foreach (var sequence in _scheduler.Retire(finishedRows)) Complete(sequence);
        running = _scheduler.Running; // the rows that go on, in order
        if (running.Count == 0) { _runner.ClearRows(); return; }

        _options.FaultInjection?.Invoke(running.Select(s => s.Seed).ToList());
        var nextTokens = new long[running.Count];
        var nextSlots = new long[running.Count];
        var nextPositions = new long[running.Count];
        for (int i = 0; i < running.Count; i++)
        {
            var s = running[i];
            nextTokens[i] = s.Policy.ResponseIds[^1];
            nextSlots[i] = s.Slot;
            nextPositions[i] = s.Policy.Position - 1;
        }
        _runner.Decode(nextTokens, nextSlots, nextPositions);
        _counters.DecodeStep();
    }

    private void ScoreSteps(List<(int Row, TokenDecision Decision)> stepRows)
    {
        var running = _scheduler.Running;
        var logits = _runner.ScoreRows([.. stepRows.Select(r => (long)r.Row)]);
        for (int j = 0; j < stepRows.Count; j++)
        {
            var (row, decision) = stepRows[j];
            var sequence = running[row];
            var step = new StepScore(decision.Position, decision.Position - sequence.Policy.PromptLength, logits[j]);
            sequence.Steps.Add(step);
            sequence.Request.Emit(new CandidateUpdate(CandidateUpdateKind.Step, sequence.CandidateIndex, Step: step));
        }
        _counters.AddStepsScored(stepRows.Count);
    }

    /// <summary>Reports a sequence the scheduler retired: its result when its policy ended it, else a cancellation.</summary>
    private void Complete(RunningSequence s)
    {
        _counters.AddActive(-1); // before completion, so a caller who sees the result sees the slot free
        if (s.ToTrajectory() is not Trajectory result) { s.Request.Finish(s.LocalIndex, null); return; }
        s.Request.Emit(new CandidateUpdate(CandidateUpdateKind.Finished, s.CandidateIndex, Result: result));
        s.Request.Finish(s.LocalIndex, result);
    }

    /// <summary>
    /// A prefill or decode step threw. The sequences it involved (every running row, and candidates being admitted)
    /// have partial state in the cache and rows, so they restart from their prompt with the same seed (the same
    /// trajectory: a candidate depends only on its seed); a candidate out of tries fails, and with it only its own
    /// request. Queued candidates keep their place; the engine goes on.
    /// </summary>
    private void RecoverFromFailedStep(Exception error)
    {
        _counters.FailedStep();
        var involved = _scheduler.ResetAfterFailedStep();
        _counters.ResetActive();
        _runner.ClearRows();

        var retry = new List<QueuedCandidate>();
        foreach (var c in involved)
        {
            if (c.Request.Cancelled) { c.Request.Finish(c.LocalIndex, null); continue; }
            if (c.Attempts + 1 >= _options.MaxAttempts)
            {
                _counters.FailedCandidate();
                c.Request.FailCandidate(new InvalidOperationException(
                    $"candidate {c.Request.CandidateIndex(c.LocalIndex)} failed in {_options.MaxAttempts} engine attempt(s): {FirstLine(error.Message)}", error));
                continue;
            }
            _counters.RestartedCandidate();
            c.Request.Emit(new CandidateUpdate(CandidateUpdateKind.Restarted, c.Request.CandidateIndex(c.LocalIndex)));
            retry.Add(c with { Attempts = c.Attempts + 1 });
        }
        // Retried candidates go first: they were admitted before anything still queued.
        _scheduler.RequeueFirst(retry);
        _counters.AddQueued(retry.Count);
    }

    private static string FirstLine(string message)
    {
        int newline = message.IndexOf('\n');
        return (newline < 0 ? message : message[..newline]).Trim();
    }

    private void FailEverything(Exception error)
    {
        foreach (var request in _scheduler.TakeAll()) request.Fail(error);
        _counters.ResetActive();
        _counters.ResetQueued();
        _runner.ClearRows();
    }

    public void Dispose()
    {
        if (_shutdown.IsCancellationRequested) return;
        _shutdown.Cancel();
        _inbox.CompleteAdding();
        _thread.Join();
        _runner.Dispose();
        _shutdown.Dispose();
    }
}
