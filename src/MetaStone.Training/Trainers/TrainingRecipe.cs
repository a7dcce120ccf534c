using System.Text.Json;

namespace MetaStone.Training.Trainers;

/// <summary>
/// Everything that decides the shipped tiny model: shape, data, policy and SPRM training. The model card
/// records the recipe it was made with; the same recipe and seed reproduce it.
/// </summary>
public sealed record TrainingRecipe
{
    public long Seed { get; init; } = 20261124;

    // Model shape (Qwen2 architecture).
    public int HiddenSize { get; init; } = 128;
    public int Layers { get; init; } = 4;
    public int Heads { get; init; } = 4;
    public int KvHeads { get; init; } = 2;
    public int IntermediateSize { get; init; } = 384;
    public int MaxPositions { get; init; } = 256;
    public double RopeTheta { get; init; } = 10000;

    // Policy: next-token training on reference solutions (loss on the response only).
    public int PolicySteps { get; init; } = 1200;
    public int BatchSize { get; init; } = 64;
    public double LearningRate { get; init; } = 2e-3;
    public double MinLearningRate { get; init; } = 1e-4;
    public int WarmupSteps { get; init; } = 100;
    public double WeightDecay { get; init; } = 0.01;
    public double ClipNorm { get; init; } = 1.0;
    public int CheckpointEvery { get; init; } = 250;
    /// <summary>
    /// Share of search-family (Countdown) problems over the policy's steps and in the SPRM sample sets; the rest are arithmetic chains.
    /// 0.5 in the shipped recipe (<see cref="Full"/>); 0 in <see cref="ChainOnly"/>, the earlier chain-only model.
    /// </summary>
    public double SearchFraction { get; init; }
    /// <summary>
    /// Loss weight of the policy's verdict tokens (the first token of each of <see cref="DecisionWords"/>), 1 = plain mean. A search
    /// attempt's verdict is one token in ~35 and "yes" is rare (~1 attempt in 10), so unweighted it is among the last things the
    /// policy learns; the SPRM reads exactly that token's position.
    /// </summary>
    public double DecisionTokenWeight { get; init; } = 1.0;
    public IReadOnlyList<string> DecisionWords { get; init; } = ["yes", "no"];

    // SPRM head: self-supervised process reward loss on the policy's own samples.
    public int SprProblems { get; init; } = 4000;
    public int SprSamplesPerProblem { get; init; } = 8;
    public int SprEpochs { get; init; } = 100;
    public int SprBatchSize { get; init; } = 512;
    public double SprLearningRate { get; init; } = 1e-3;
    public double SprWeightDecay { get; init; } = 0.01;
    public int SprMaxNewTokens { get; init; } = 160;
    /// <summary>Cosine-decay floor of the head learning rate (equal to SprLearningRate = constant).</summary>
    public double SprMinLearningRate { get; init; } = 1e-4;
    /// <summary>Train the head on per-channel standardized features, folded into 0.weight/0.bias at the end (the shipped head reads raw features).</summary>
    public bool SprStandardizeFeatures { get; init; } = true;
    /// <summary>Held-out dev-split problems (never test) sampled like the training ones, for choosing the head's epoch; 0 = none.</summary>
    public int SprDevProblems { get; init; } = 500;
    public int SprDevSamplesPerProblem { get; init; } = 8;
    /// <summary>Which epoch's head to keep: "last", "dev-auroc" or "dev-best-of-n" (Best-of-SprDevSamplesPerProblem on dev).</summary>
    public string SprSelectBy { get; init; } = "dev-auroc";
    /// <summary>
    /// Epoch selection prefers epochs whose dev ties-at-top fraction (problems whose best score is shared by two different texts
    /// within 1e-6) is at most this in every family: the SPR loss drives the head to saturated 0/1 scores within a few epochs,
    /// and saturated scores tie. 1 = no limit.
    /// </summary>
    public double SprMaxDevTies { get; init; } = 1.0;

    /// <summary>The recipe of the shipped model (models/metastone-tiny): both families. <c>metastone train</c>.</summary>
    public static TrainingRecipe Full => BothFamilies;

    /// <summary>
    /// The earlier chain-only model (issue 3; its analysis is docs/experiments/chain-only-analysis.md): the record's defaults.
    /// <c>metastone train --preset chain-only</c>.
    /// </summary>
    public static TrainingRecipe ChainOnly => new();

    /// <summary>
    /// One model of both families (chain + Countdown search, half each; the search traces check each attempt against the target
    /// in the open, see CountdownTask), with the verdict tokens weighted in the policy loss: the shipped recipe (<see cref="Full"/>).
    /// </summary>
    private static TrainingRecipe BothFamilies => new()
    {
        Seed = 20261203, PolicySteps = 2400, WarmupSteps = 100, CheckpointEvery = 300, SearchFraction = 0.5, DecisionTokenWeight = 4,
        SprProblems = 1200, SprEpochs = 60, SprMaxNewTokens = 160, SprDevProblems = 400, SprMaxDevTies = 0.05,
    };

    /// <summary>A recipe that runs end to end in about two minutes: same code, smaller everything.</summary>
    public static TrainingRecipe Smoke => new()
    {
        HiddenSize = 64, Layers = 2, Heads = 4, KvHeads = 2, IntermediateSize = 160,
        PolicySteps = 120, BatchSize = 32, WarmupSteps = 10, CheckpointEvery = 60,
        SprProblems = 48, SprSamplesPerProblem = 4, SprEpochs = 10, SprBatchSize = 256, SprMaxNewTokens = 200, SearchFraction = 0.5,
        SprDevProblems = 16, SprDevSamplesPerProblem = 4,
    };

    public string ToJson() => JsonSerializer.Serialize(this, new JsonSerializerOptions { WriteIndented = true });

    public static TrainingRecipe FromJson(string json) =>
        JsonSerializer.Deserialize<TrainingRecipe>(json) ?? throw new InvalidDataException("empty recipe JSON");
}
