namespace MetaStone.Contracts;

/// <summary>
/// The one set of sampling defaults of jobs, sweeps and every CLI verb (the released MetaStone-S1 settings, with a
/// token limit): verbs used to default <c>--max-new-tokens</c> to 256, 512 or 1024 depending on which one you ran.
/// </summary>
public static class SamplingDefaults
{
    public const int MaxNewTokens = 1024;
    public const double Temperature = 0.6;
    public const double TopP = 0.95;
    public const double RepetitionPenalty = 1.05;
}
