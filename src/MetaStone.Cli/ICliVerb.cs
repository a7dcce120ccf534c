using System.CommandLine;

namespace MetaStone.Cli;

/// <summary>
/// A top-level verb of the <c>metastone</c> command (<c>metastone doctor</c>, later <c>ask</c>, <c>serve</c>…).
/// Implement it on a sealed class in <c>Commands/</c>; <see cref="CliRootCommand"/> finds every implementation
/// by reflection, so verbs written by different people never edit a shared list.
/// </summary>
public interface ICliVerb
{
    /// <summary>Builds the verb's command with its options and action.</summary>
    static abstract Command Create();
}
