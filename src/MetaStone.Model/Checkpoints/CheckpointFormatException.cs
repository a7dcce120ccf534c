namespace MetaStone.Model.Checkpoints;

/// <summary>
/// A checkpoint file is malformed, unsupported or refused (e.g. a pickle asking for a forbidden global).
/// The message names the file and, where one is involved, the tensor.
/// </summary>
public sealed class CheckpointFormatException : Exception
{
    public CheckpointFormatException(string message)
        : base(message)
    {
    }

    public CheckpointFormatException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
