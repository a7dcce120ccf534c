using System.Collections.Concurrent;
using Orleans.Runtime;

namespace MetaStone.Contracts;

/// <summary>
/// Typed grain references by key without Orleans' per-call type resolution: <c>IGrainFactory.GetGrain&lt;T&gt;(key)</c>
/// resolves the interface's grain type through reflection (its custom attributes) on every call, not cached in Orleans
/// 10.4. A k = 32 job makes about 100 references (each candidate its registry and replica, the coordinator its candidates,
/// the client its polls); profiled in the embedded mode that resolution was 5–6 % of all CPU time. Here a type is resolved
/// once per factory and references are made from (grain type, key) directly. Thread-safe.
/// </summary>
public sealed class GrainReferences(IGrainFactory grains)
{
    private readonly ConcurrentDictionary<Type, (GrainType Type, GrainInterfaceType Interface)> _kinds = new();
    private readonly ConcurrentDictionary<(Type, long), IAddressable> _singletons = new();

    public IGrainFactory Factory => grains;

    /// <summary>The grain of interface <typeparamref name="T"/> with this string key.</summary>
    public T Get<T>(string key) where T : IGrainWithStringKey
    {
        if (_kinds.TryGetValue(typeof(T), out var kind)) return (T)grains.GetGrain(GrainId.Create(kind.Type, key), kind.Interface);
        var reference = grains.GetGrain<T>(key);
        var made = (GrainReference)(object)reference;
        _kinds.TryAdd(typeof(T), (made.GrainId.Type, made.InterfaceType));
        return reference;
    }

    /// <summary>The grain of interface <typeparamref name="T"/> with this integer key (singletons such as the registry), made once.</summary>
    public T Get<T>(long key) where T : IGrainWithIntegerKey =>
        (T)_singletons.GetOrAdd((typeof(T), key), static (k, factory) => factory.GetGrain<T>(k.Item2), grains);
}
