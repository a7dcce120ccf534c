namespace MetaStone.Training.Tasks;

/// <summary>
/// A trained byte-level BPE: the model vocabulary in id order (byte-level strings), the merges in rank order
/// (<c>"a b"</c>), and the special tokens, whose ids follow the model vocabulary.
/// </summary>
public sealed record ByteLevelBpeVocabulary(IReadOnlyList<string> Tokens, IReadOnlyList<string> Merges, IReadOnlyList<string> SpecialTokens)
{
    /// <summary>Model vocabulary plus special tokens: the embedding size a model needs.</summary>
    public int TotalSize => Tokens.Count + SpecialTokens.Count;

    /// <summary>The id of a special token (model vocabulary size + its index).</summary>
    public int SpecialTokenId(string content)
    {
        for (var i = 0; i < SpecialTokens.Count; i++)
            if (string.Equals(SpecialTokens[i], content, StringComparison.Ordinal))
                return Tokens.Count + i;
        throw new KeyNotFoundException($"'{content}' is not a special token.");
    }

    /// <summary>The id of a model-vocabulary token given in byte-level form, or -1.</summary>
    public int TokenId(string byteLevelToken)
    {
        for (var i = 0; i < Tokens.Count; i++)
            if (string.Equals(Tokens[i], byteLevelToken, StringComparison.Ordinal))
                return i;
        return -1;
    }
}
