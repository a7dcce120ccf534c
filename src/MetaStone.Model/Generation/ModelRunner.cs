using MetaStone.Reasoning;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model.Generation;

/// <summary>What the runner keeps of a prefilled prompt: its last-position logits and SPRM features (the first rows of
/// every sequence that starts from it) and its token-history row. Detached tensors, freed by <see cref="Dispose"/>.</summary>
internal sealed class PrefilledPrompt(Tensor lastLogits, Tensor lastFeatures, Tensor history) : IDisposable
{
    public Tensor LastLogits { get; } = lastLogits;
    public Tensor LastFeatures { get; } = lastFeatures;
    public Tensor History { get; } = history;

    public void Dispose()
    {
        LastLogits.Dispose();
        LastFeatures.Dispose();
        History.Dispose();
    }
}

/// <summary>
/// The engine's model runner: owns the model, the SPRM head, the KV cache slots, each slot's token history and the batch
/// rows (logits and SPRM features, row i produced for the sequence the engine keeps in row i). It prefills prompts into
/// slots, copies prompt rows between slots, samples, scores rows, and runs one batched decode step. It knows slots, rows
/// and token ids, never requests or candidates.
/// </summary>
/// <remarks>
/// Engine thread only, and every call inside the engine's per-iteration <c>NewDisposeScope()</c> and <c>no_grad()</c>
/// (dispose scopes are thread-static); tensors that outlive an iteration are detached here and freed when replaced.
/// </remarks>
internal sealed class ModelRunner : IDisposable
{
    private readonly Qwen2ForCausalLM _model;
    private readonly SprmHead? _head;
    private readonly KvCache _cache;
    private readonly Tensor _history; // [slots, maxLength] int64: each slot's tokens so far (repetition penalty); tail padded with its first token
    private readonly int _maxLength;
    private Tensor? _logits;   // [rows, V] fp32
    private Tensor? _features; // [rows, H] model dtype, hidden_states[-2] at each row's last position
    private readonly Tensor? _decodeLogits; // [slots, V] fp32, reused by every decode step (see Qwen2ForCausalLM.Decode)

    public ModelRunner(Qwen2ForCausalLM model, SprmHead? head, int slots, int maxLength)
    {
        _model = model;
        _head = head;
        _maxLength = maxLength;
        _cache = new KvCache(model.Config, slots, maxLength, model.Device, model.KvDtype);
        _history = zeros([slots, maxLength], dtype: ScalarType.Int64, device: model.Device).DetachFromDisposeScope();
        // Only a bf16/fp16 head in torch widens its logits into memory of its own; fp32 and the host kernel return fp32.
        if (model.Dtype != ScalarType.Float32)
            _decodeLogits = empty([slots, model.Config.VocabSize], dtype: ScalarType.Float32, device: model.Device).DetachFromDisposeScope();
    }

    public bool HasHead => _head is not null;

    /// <summary>Runs the prompt through the model into <paramref name="slot"/>'s cache rows.</summary>
    public PrefilledPrompt Prefill(IReadOnlyList<int> promptIds, int slot)
    {
        var ids = tensor(promptIds.Select(i => (long)i).ToArray(), device: _model.Device).unsqueeze(0);
        var output = _model.Prefill(ids, _cache, slot, 0);
        // History row: the prompt, then its first token repeated (a token that is in the sequence anyway).
        var history = TorchScalars.Full(_maxLength, promptIds[0], ScalarType.Int64, _model.Device);
        history.narrow(0, 0, promptIds.Count).copy_(ids.squeeze(0));
        return new PrefilledPrompt(output.Logits.squeeze(0).DetachFromDisposeScope(),
            output.SprmFeatures.squeeze(0).DetachFromDisposeScope(), history.DetachFromDisposeScope());
    }

    /// <summary>Copies cache positions [0, <paramref name="length"/>) of one slot into others (no recomputation).</summary>
    public void CopyPrompt(int sourceSlot, IReadOnlyList<int> targetSlots, int length) => _cache.CopyPrefix(sourceSlot, targetSlots, length);

    /// <summary>A slot starts a sequence from <paramref name="prompt"/>: its token history becomes the prompt's.</summary>
    public void StartSlot(int slot, PrefilledPrompt prompt) => _history[slot].copy_(prompt.History);

    /// <summary>New rows join the batch after the running ones, each starting from its prompt's last-position outputs.</summary>
    public void AppendRows(IReadOnlyList<PrefilledPrompt> prompts)
    {
        if (prompts.Count == 0) return;
        var logits = cat(prompts.Select(p => p.LastLogits.unsqueeze(0)).ToList(), 0);
        var features = cat(prompts.Select(p => p.LastFeatures.unsqueeze(0)).ToList(), 0);
        ReplaceRows(_logits is null ? logits : cat([_logits, logits], 0), _features is null ? features : cat([_features, features], 0));
    }

    /// <summary>Samples one token per row (<see cref="TokenSampler"/>); <paramref name="slots"/>[i] is row i's slot and
    /// <paramref name="longestSequence"/> the longest prompt + response among them (the history the penalty reads).</summary>
    public long[] Sample(RowSampling[] rows, long[] slots, int longestSequence)
    {
        Tensor? history = null;
        if (rows.Any(r => r.RepetitionPenalty != 1.0))
            history = _history.narrow(1, 0, longestSequence).index_select(0, tensor(slots, device: _model.Device));
        return TokenSampler.Sample(_logits!, history, rows);
    }

    /// <summary>SPRM head logits of the given rows, from the features the last forward pass already computed.</summary>
    public float[] ScoreRows(long[] rows)
    {
        return _head!.LogitsOfRows(_features!, rows);
    }

    /// <summary>Writes token <paramref name="tokens"/>[i] at position <paramref name="positions"/>[i] of slot
    /// <paramref name="slots"/>[i]'s history, in one op.</summary>
    public void RecordTokens(long[] slots, long[] positions, long[] tokens)
    {
        var flat = new long[slots.Length];
        for (int i = 0; i < flat.Length; i++) flat[i] = slots[i] * _maxLength + positions[i];
        _history.view(-1).index_copy_(0, tensor(flat, device: _model.Device), tensor(tokens, device: _model.Device));
    }

    /// <summary>Keeps only the given rows, in that order (an empty list clears the batch).</summary>
    public void KeepRows(IReadOnlyList<int> rows)
    {
        if (rows.Count == 0) { ClearRows(); return; }
        var index = tensor(rows.Select(i => (long)i).ToArray(), device: _model.Device);
        ReplaceRows(_logits!.index_select(0, index), _features!.index_select(0, index));
    }

    /// <summary>One batched decode step: row i feeds <paramref name="tokens"/>[i] at <paramref name="positions"/>[i] of
    /// <paramref name="slots"/>[i]; its outputs become the new rows.</summary>
    public void Decode(long[] tokens, long[] slots, long[] positions)
    {
        // The previous rows (_logits, possibly a view of _decodeLogits) were sampled from before this step.
        var output = _model.Decode(tensor(tokens, device: _model.Device), _cache, slots, positions, _decodeLogits);
        ReplaceRows(output.Logits, output.SprmFeatures);
    }

    public void ClearRows() => ReplaceRows(null, null);

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

    public void Dispose()
    {
        ClearRows();
        _cache.Dispose();
        _history.Dispose();
        _decodeLogits?.Dispose();
    }
}
