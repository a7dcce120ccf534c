using MetaStone.Silo;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;

// The silo executable: settings from MetaStone__* / Orleans__* environment variables or --MetaStone:Key=value arguments.
var configuration = new ConfigurationBuilder().AddEnvironmentVariables().AddCommandLine(args).Build();
SiloSettings settings;
try { settings = SiloSettings.FromConfiguration(configuration); }
catch (ArgumentException e)
{
    Console.Error.WriteLine($"metastone silo: cannot start: {e.Message}");
    return 2;
}
IHost host;
try
{
    host = await MetaStoneSilo.StartAsync(settings);
}
catch (Exception e) when (e is ArgumentException or InvalidOperationException or DirectoryNotFoundException or FileNotFoundException or InvalidDataException)
{
    Console.Error.WriteLine($"metastone silo {settings.Name}: cannot start: {e.Message}");
    return 2;
}
catch (Exception e)
{
    // Anything else (a port in use, a broken model file the loader did not classify): one line, not a stack dump.
    Console.Error.WriteLine($"metastone silo {settings.Name}: cannot start: {e.GetType().Name}: {e.Message}");
    return 1;
}
// Tests and scripts wait for this line: the models are loaded and the silo is active in the cluster.
Console.WriteLine($"metastone silo {settings.Name} ready: silo {settings.AdvertisedAddress}:{settings.SiloPort}, gateway {settings.GatewayPort}, devices {settings.Devices}{settings.HttpDescription}");
// SIGTERM / SIGINT / docker stop: stop taking work, let in-flight candidates finish (grace), leave the cluster, exit 0.
await MetaStoneSilo.RunUntilStoppedAsync(host);
host.Dispose();
Console.WriteLine($"metastone silo {settings.Name} stopped");
return SiloExit.Code; // 0, or 3 when the membership table was lost (see MembershipWatchdog)
