namespace MetaStone.Cli.Tests;

/// <summary>Tests that pick free loopback ports and rely on what listens there run one at a time.</summary>
[CollectionDefinition(Name)]
public sealed class LoopbackPortCollection
{
    public const string Name = "loopback ports";
}
