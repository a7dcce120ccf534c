using System.Net;
using System.Net.Sockets;

namespace MetaStone.Silo;

/// <summary>
/// Refuses to start a silo whose silo or gateway port is taken. Orleans would otherwise join the cluster with the
/// same endpoint as the silo already listening there, and membership declares the older generation dead: starting a
/// second silo on a busy port used to kill the running one (issue 11).
/// </summary>
public static class PortCheck
{
    /// <summary>Throws <see cref="ArgumentException"/> "port N in use …" when a port cannot be bound on <paramref name="address"/>.</summary>
    public static void EnsureFree(IPAddress address, params (int Port, string Role)[] ports)
    {
        foreach (var (port, role) in ports)
        {
            if (!IsFree(address, port))
                throw new ArgumentException($"port {port} in use: cannot listen on {address}:{port} for the {role} (another silo or program holds it; choose another --{role}-port / MetaStone__{char.ToUpperInvariant(role[0])}{role[1..]}Port)");
        }
    }

    public static bool IsFree(IPAddress address, int port)
    {
        using var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        // No SO_REUSEPORT: on Linux the bind then fails wherever another socket listens on the port (SO_REUSEADDR,
        // which .NET may set, only skips TIME_WAIT leftovers).
        try
        {
            socket.Bind(new IPEndPoint(address, port));
            socket.Listen(1);
            return true;
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.AddressAlreadyInUse or SocketError.AccessDenied)
        {
            return false;
        }
    }
}
