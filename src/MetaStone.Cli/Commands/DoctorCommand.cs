using System.CommandLine;
using MetaStone.Cli.Doctor;

namespace MetaStone.Cli.Commands;

/// <summary><c>metastone doctor [--json] [--redis host:port]</c>: checks this machine and prints exact fixes.</summary>
public sealed class DoctorCommand : ICliVerb
{
    public static Command Create()
    {
        var json = JsonOutput.CreateOption();
        var redis = new Option<string>("--redis")
        {
            Description = "Redis endpoint to probe (host:port).",
            HelpName = "host:port",
            DefaultValueFactory = _ => RedisEndpoint.Default.ToString(),
        };
        redis.Validators.Add(result =>
        {
            if (!RedisEndpoint.TryParse(result.GetValueOrDefault<string>(), out _))
                result.AddError($"--redis expects host:port (e.g. {RedisEndpoint.Default}), got '{result.GetValueOrDefault<string>()}'.");
        });

        var command = new Command("doctor", "Check OS, libstdc++, the native torch load, CPU features, Redis and node; exit 1 on any failure.")
        {
            json,
            redis,
        };
        command.SetAction(async (parseResult, cancellationToken) =>
        {
            RedisEndpoint.TryParse(parseResult.GetValue(redis), out var endpoint);
            var doctor = new SystemDoctor { Redis = endpoint };
            var checks = await doctor.RunAllAsync(cancellationToken).ConfigureAwait(false);
            var output = parseResult.InvocationConfiguration.Output;
            var healthy = !SystemDoctor.HasFailures(checks);
            if (parseResult.GetValue(json))
                JsonOutput.Write(output, new DoctorReport(healthy, checks));
            else
                WriteText(output, checks, healthy);
            return healthy ? 0 : 1;
        });
        return command;
    }

    /// <summary>The <c>--json</c> document: <c>{ "healthy": bool, "checks": [{ name, status, detail, fix }] }</c>.</summary>
    public sealed record DoctorReport(bool Healthy, IReadOnlyList<DoctorCheck> Checks);

    private static void WriteText(TextWriter output, IReadOnlyList<DoctorCheck> checks, bool healthy)
    {
        var nameWidth = checks.Max(check => check.Name.Length);
        foreach (var check in checks)
        {
            output.WriteLine($"[{StatusLabel(check.Status)}] {check.Name.PadRight(nameWidth)}  {check.Detail}");
            if (check.Fix is not null)
                output.WriteLine($"       {new string(' ', nameWidth)}  fix: {check.Fix}");
        }
        var warnings = checks.Count(check => check.Status == DoctorStatus.Warn);
        var failures = checks.Count(check => check.Status == DoctorStatus.Fail);
        output.WriteLine(healthy
            ? $"doctor: ready ({warnings} warning(s))"
            : $"doctor: {failures} failure(s), {warnings} warning(s): apply the fixes above and run again");
    }

    private static string StatusLabel(DoctorStatus status) => status switch
    {
        DoctorStatus.Ok => " ok ",
        DoctorStatus.Warn => "warn",
        DoctorStatus.Fail => "FAIL",
        _ => "info",
    };
}
