using System.CommandLine;
using System.Reflection;

namespace MetaStone.Cli;

/// <summary>Builds the <c>metastone</c> root command from every <see cref="ICliVerb"/> in this assembly.</summary>
public static class CliRootCommand
{
    public static RootCommand Create()
    {
        var root = new RootCommand(
            "MetaStone.Cluster: serve reflective generative models (Qwen2 policy + SPRM step scorer) with test-time scaling.");
        foreach (var verb in CreateVerbs())
            root.Add(verb);
        return root;
    }

    /// <summary>
    /// Parses and runs a command line. A parse error (unknown option, a value of the wrong type) is bad input: one line per error
    /// in our words on <paramref name="error"/> (no .NET type names such as <c>Nullable`1[System.Int32]</c>), a pointer to
    /// <c>--help</c>, and <see cref="ExitCodes.BadInput"/> — instead of the full help text and exit code 1.
    /// </summary>
    public static async Task<int> RunAsync(string[] args, InvocationConfiguration? configuration = null, TextWriter? error = null)
    {
        error ??= Console.Error;
        var parse = Create().Parse(args);
        if (parse.Errors.Count == 0) return await parse.InvokeAsync(configuration ?? new InvocationConfiguration());
        foreach (var e in parse.Errors) error.WriteLine($"error: {CleanMessage(e.Message)}");
        error.WriteLine($"see: {string.Join(' ', parse.CommandResult.Command.Parents.OfType<Command>().Reverse().Select(c => c is RootCommand ? "metastone" : c.Name).Append(parse.CommandResult.Command is RootCommand ? "" : parse.CommandResult.Command.Name).Where(n => n.Length > 0))} --help");
        return ExitCodes.BadInput;
    }

    /// <summary>Removes .NET internals from a message meant for a person: type names and the "(Parameter 'x')" suffix.</summary>
    public static string CleanMessage(string message)
    {
        static string Friendly(string type) => type switch
        {
            "Int32" or "Int64" or "Int16" or "UInt32" or "UInt64" => "an integer",
            "Double" or "Single" or "Decimal" => "a number",
            "Boolean" => "true or false",
            _ => "a " + type.ToLowerInvariant(),
        };
        message = System.Text.RegularExpressions.Regex.Replace(message, @"as expected type '(?:System\.Nullable`1\[)?System\.(\w+)\]?'", m => "as " + Friendly(m.Groups[1].Value));
        message = System.Text.RegularExpressions.Regex.Replace(message, @"'(?:System\.Nullable`1\[)?System\.(\w+)\]?'", m => Friendly(m.Groups[1].Value));
        return System.Text.RegularExpressions.Regex.Replace(message, @"\s*\(Parameter '[^']*'\)", "");
    }

    /// <summary>One command per <see cref="ICliVerb"/> implementation, ordered by name so help output is stable.</summary>
    public static IReadOnlyList<Command> CreateVerbs()
    {
        var verbTypes = typeof(CliRootCommand).Assembly.GetTypes()
            .Where(type => type is { IsClass: true, IsAbstract: false } && typeof(ICliVerb).IsAssignableFrom(type));
        var commands = new List<Command>();
        foreach (var type in verbTypes)
        {
            // Static abstract interface members cannot be called through the interface at run time,
            // so call the implementing class's public static Create() directly.
            var create = type.GetMethod(nameof(ICliVerb.Create), BindingFlags.Public | BindingFlags.Static, Type.EmptyTypes)
                ?? throw new InvalidOperationException($"{type.FullName} implements {nameof(ICliVerb)} but has no public static Create().");
            commands.Add((Command)create.Invoke(null, null)!);
        }
        commands.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
        return commands;
    }
}
