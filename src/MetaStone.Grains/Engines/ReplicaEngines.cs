namespace MetaStone.Grains.Engines;

/// <summary>
/// The engines of this silo, one per device, loaded before the silo accepts work. A silo-wide singleton: replica
/// grains on this silo forward to it, and the heartbeat reports its load.
/// </summary>
public sealed class ReplicaEngines(string siloName, IReadOnlyList<ICandidateEngine> engines) : IDisposable
{
    public string SiloName => siloName;
    public IReadOnlyList<ICandidateEngine> Engines => engines;

    /// <summary>"{silo}/{device}": the key of the replica grain for that engine.</summary>
    public static string ReplicaKey(string silo, string device) => $"{silo}/{device}";

    /// <summary>Splits a replica key at its last '/' (silo names never contain one; devices never do either).</summary>
    public static (string Silo, string Device) ParseReplicaKey(string key)
    {
        int slash = key.LastIndexOf('/');
        if (slash <= 0 || slash == key.Length - 1) throw new ArgumentException($"'{key}' is not a replica key of the form silo/device");
        return (key[..slash], key[(slash + 1)..]);
    }

    public ICandidateEngine ForDevice(string device) =>
        engines.FirstOrDefault(e => e.Device == device)
        ?? throw new InvalidOperationException($"silo '{siloName}' has no engine for device '{device}' (it has: {string.Join(", ", engines.Select(e => e.Device))})");

    public void Dispose()
    {
        foreach (var engine in engines) engine.Dispose();
    }
}
