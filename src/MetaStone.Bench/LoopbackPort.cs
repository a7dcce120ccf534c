using System.Net;
using System.Net.Sockets;

namespace MetaStone.Bench;

/// <summary>A free TCP port on 127.0.0.1 for a silo, gateway or redis-server started for a run (the CLI's verbs use the same one).</summary>
public static class LoopbackPort
{
    public static int Free()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
