using System.CommandLine;
using MetaStone.Cli.Deploy;

namespace MetaStone.Cli.Commands;

/// <summary>
/// <c>metastone compose --gpus N [--cpu] [--subnet CIDR] [--out FILE]</c>: writes the docker-compose file for an
/// N-GPU (or, with --cpu, N-silo CPU-only) cluster, so larger machines never need a hand-written file.
/// </summary>
public sealed class ComposeCommand : ICliVerb
{
    public static Command Create()
    {
        // --silos reads better with --cpu; both name the same number.
        var gpus = new Option<int>("--gpus", "--silos")
        {
            Description = $"Number of silos: one per GPU (ids 0..N-1), or N CPU silos with --cpu (1..{ComposeSpec.MaxSilos}).",
            HelpName = "N",
            DefaultValueFactory = _ => 4,
        };
        var cpu = new Option<bool>("--cpu") { Description = "CPU-only variant: CPU silo image, no GPU reservations." };
        var subnet = new Option<string?>("--subnet")
        {
            Description = $"IPv4 /24 of the compose network (default {ComposeSpec.DefaultGpuSubnet}, {ComposeSpec.DefaultCpuSubnet} with --cpu).",
            HelpName = "a.b.c.0/24",
        };
        var output = new Option<FileInfo?>("--out") { Description = "Write to this file instead of standard output.", HelpName = "FILE" };

        var command = new Command("compose", "Generate a docker-compose file: Redis, one silo per GPU (or CPU silos), and a client profile.")
        {
            gpus, cpu, subnet, output,
        };
        command.SetAction(parseResult =>
        {
            var spec = new ComposeSpec
            {
                Silos = parseResult.GetValue(gpus),
                Cpu = parseResult.GetValue(cpu),
                Subnet = parseResult.GetValue(subnet),
            };
            if (ComposeGenerator.Validate(spec) is { } error)
            {
                parseResult.InvocationConfiguration.Error.WriteLine($"error: {error}");
                return 2;
            }
            var yaml = ComposeGenerator.Generate(spec);
            if (parseResult.GetValue(output) is { } file)
            {
                file.Directory?.Create();
                File.WriteAllText(file.FullName, yaml);
                parseResult.InvocationConfiguration.Output.WriteLine(
                    $"wrote {file.FullName} ({spec.Silos} {(spec.Cpu ? "CPU" : "GPU")} silo(s)); check it with: docker compose -f {file.FullName} config -q");
            }
            else
            {
                parseResult.InvocationConfiguration.Output.Write(yaml);
            }
            return 0;
        });
        return command;
    }
}
