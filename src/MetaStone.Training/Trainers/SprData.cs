using System.Security.Cryptography;
using System.Text.Json;
using MetaStone.Model;
using MetaStone.Model.Checkpoints;
using MetaStone.Model.Tokenization;
using MetaStone.Reasoning;
using MetaStone.Training.Tasks;
using static TorchSharp.torch;

namespace MetaStone.Training.Trainers;

/// <summary>What the head trainer needs to know about one sampled trajectory (no token ids).</summary>
public sealed record SprTrajectoryInfo(int ProblemIndex, int CandidateIndex, bool Correct, bool Finished, int Steps, string? Answer, string Text,
    TaskFamily Family = TaskFamily.Chain);

/// <summary>
/// The policy's own samples on a set of problems with the SPRM features of their steps: features [S, c]
/// (hidden_states[-2] at every scored position, in trajectory order) and, per trajectory, its grade and
/// number of steps. Cached in the work directory keyed by the policy weights and the sampling parameters,
/// so a head-only retrain samples once.
/// </summary>
public sealed class SprData : IDisposable
{
    public required Tensor Features { get; init; }
    public required IReadOnlyList<SprTrajectoryInfo> Trajectories { get; init; }
    /// <summary>Loaded from the work directory's cache rather than sampled.</summary>
    public bool FromCache { get; init; }

    /// <summary>Index of the owning trajectory of every feature row.</summary>
    public int[] Owner => [.. Trajectories.SelectMany((t, i) => Enumerable.Repeat(i, t.Steps))];
    public float[] Labels => [.. Trajectories.SelectMany(t => Enumerable.Repeat(t.Correct ? 1f : 0f, t.Steps))];
    /// <summary>Truncated samples say nothing about correctness and are excluded from the loss.</summary>
    public bool[] Valid => [.. Trajectories.SelectMany(t => Enumerable.Repeat(t.Finished, t.Steps))];
    public int StepCount => (int)Features.shape[0];
    public double Accuracy => Trajectories.Count == 0 ? 0 : Trajectories.Count(t => t.Correct) / (double)Trajectories.Count;

    public static SprData From(IReadOnlyList<LabeledTrajectory> samples, Tensor features, QwenTokenizer tokenizer, IReadOnlyList<int> eos,
        IReadOnlyList<TaskProblem>? problems = null) => new()
    {
        Features = features,
        Trajectories = samples.Select(s =>
        {
            string text = tokenizer.Decode(s.Trajectory.ResponseIds.Where(id => !eos.Contains(id)), skipSpecialTokens: false);
            return new SprTrajectoryInfo(s.ProblemIndex, s.Trajectory.CandidateIndex, s.Correct, s.Finished, s.FeaturePositions.Length,
                AnswerGrader.ExtractBoxed(AnswerGrader.AnswerPart(text)), text, problems?[s.ProblemIndex].Family ?? TaskFamily.Chain);
        }).ToList(),
    };

    /// <summary>
    /// Samples <paramref name="samplesPerProblem"/> trajectories per problem with <paramref name="policy"/> and gathers their
    /// step features, or loads them from <paramref name="cacheDirectory"/> when the same policy weights and parameters were sampled before.
    /// </summary>
    public static async Task<SprData> SampleOrLoadAsync(Qwen2ForCausalLM policy, string policyWeightsFile, QwenTokenizer tokenizer, StepTokenSet rules,
        IReadOnlyList<int> eos, IReadOnlyList<TaskProblem> problems, string tag, int samplesPerProblem, int maxNewTokens, long seed,
        string? cacheDirectory, Action<int, int>? progress = null, CancellationToken cancellationToken = default)
    {
        string? cacheBase = null;
        if (cacheDirectory is not null)
        {
            string key = Convert.ToHexString(SHA256.HashData(
                [.. File.ReadAllBytes(policyWeightsFile), .. System.Text.Encoding.UTF8.GetBytes(
                    $"{tag}|{problems.Count}|{string.Join(',', problems.Take(3).Select(p => p.Id))}|{samplesPerProblem}|{maxNewTokens}|{seed}")]))[..16];
            cacheBase = Path.Combine(cacheDirectory, $"sprm-data-{tag}-{problems.Count}x{samplesPerProblem}-{key}");
            if (File.Exists(cacheBase + ".json") && File.Exists(cacheBase + ".safetensors"))
            {
                var infos = JsonSerializer.Deserialize<List<SprTrajectoryInfo>>(File.ReadAllText(cacheBase + ".json"))!;
                var tensors = SafeTensors.Load(cacheBase + ".safetensors");
                return new SprData { Features = tensors["features"], Trajectories = infos, FromCache = true };
            }
        }
        var samples = await SprTrainer.SampleAsync(policy, tokenizer, rules, eos, problems, samplesPerProblem, maxNewTokens, seed,
            progress: progress, cancellationToken: cancellationToken).ConfigureAwait(false);
        var prompts = problems.Select(p => tokenizer.Encode(TaskChatFormat.GenerationPrompt(p.Prompt))).ToList();
        var features = SprTrainer.StepFeatures(policy, prompts, samples);
        var data = From(samples, features, tokenizer, eos, problems);
        if (cacheBase is not null)
        {
            Directory.CreateDirectory(cacheDirectory!);
            SafeTensors.Save(cacheBase + ".safetensors", new Dictionary<string, Tensor> { ["features"] = features });
            File.WriteAllText(cacheBase + ".json", JsonSerializer.Serialize(data.Trajectories));
        }
        return data;
    }

    public void Dispose() => Features.Dispose();
}
