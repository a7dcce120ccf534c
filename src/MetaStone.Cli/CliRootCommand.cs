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
