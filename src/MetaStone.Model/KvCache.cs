using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model;

/// <summary>
/// Preallocated key/value cache organised in slots: one slot per running sequence, each holding up to
/// <see cref="MaxLength"/> positions. Layout per layer <c>[slots, maxLength, kvHeads, headDim]</c>, so
/// one decode step writes every sequence's new row with a single <c>index_copy_</c> on the flattened
/// view and a prompt's rows can be copied to other slots without recomputation (shared prefix).
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly Tensor[] _keys;
    private readonly Tensor[] _values;
    private readonly Tensor[] _flatKeys;   // [slots·maxLength, 1, kvHeads, headDim] views of _keys
    private readonly Tensor[] _flatValues;

    public int Slots { get; }
    public int MaxLength { get; }
    public int Layers => _keys.Length;
    public Device Device { get; }
    public ScalarType Dtype { get; }

    public KvCache(Qwen2Config config, int slots, int maxLength, Device device, ScalarType dtype)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(slots, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLength, 1);
        Slots = slots;
        MaxLength = maxLength;
        Device = device;
        Dtype = dtype;
        _keys = new Tensor[config.NumHiddenLayers];
        _values = new Tensor[config.NumHiddenLayers];
        _flatKeys = new Tensor[config.NumHiddenLayers];
        _flatValues = new Tensor[config.NumHiddenLayers];
        for (int i = 0; i < config.NumHiddenLayers; i++)
        {
            // Long-lived: created outside any dispose scope, owned by this object.
            _keys[i] = zeros([slots, maxLength, config.NumKeyValueHeads, config.HeadDim], dtype: dtype, device: device).DetachFromDisposeScope();
            _values[i] = zeros([slots, maxLength, config.NumKeyValueHeads, config.HeadDim], dtype: dtype, device: device).DetachFromDisposeScope();
            // Made once: a decode step writes its [B, 1, kv, hd] rows into these without a view or reshape per layer.
            _flatKeys[i] = _keys[i].view(slots * maxLength, 1, config.NumKeyValueHeads, config.HeadDim).DetachFromDisposeScope();
            _flatValues[i] = _values[i].view(slots * maxLength, 1, config.NumKeyValueHeads, config.HeadDim).DetachFromDisposeScope();
        }
    }

    /// <summary>Bytes held by the cache.</summary>
    public long Bytes => _keys.Sum(k => k.NumberOfElements * k.ElementSize) * 2;

    internal Tensor Keys(int layer) => _keys[layer];
    internal Tensor Values(int layer) => _values[layer];

    /// <summary>The layer's keys as [slots·maxLength, 1, kvHeads, headDim]: row slot·maxLength + position.</summary>
    internal Tensor FlatKeys(int layer) => _flatKeys[layer];
    internal Tensor FlatValues(int layer) => _flatValues[layer];

    /// <summary>Copies positions [0, length) of one slot into other slots (shared-prompt fan-out).</summary>
    public void CopyPrefix(int sourceSlot, IReadOnlyList<int> targetSlots, int length)
    {
        if (length == 0 || targetSlots.Count == 0) return;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        foreach (var cache in _keys.Concat(_values))
        {
            var src = cache[sourceSlot].narrow(0, 0, length);
            foreach (int target in targetSlots)
                cache[target].narrow(0, 0, length).copy_(src);
        }
    }

    public void Dispose()
    {
        foreach (var t in _flatKeys) t.Dispose();
        foreach (var t in _flatValues) t.Dispose();
        foreach (var t in _keys) t.Dispose();
        foreach (var t in _values) t.Dispose();
    }
}
