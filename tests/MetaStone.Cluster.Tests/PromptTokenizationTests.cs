using MetaStone.Cluster.Tests.Infrastructure;
using MetaStone.Contracts;
using MetaStone.Grains.Engines;
using MetaStone.Model;

namespace MetaStone.Cluster.Tests;

/// <summary>Issue 12, data path: a job's prompt is tokenized once per replica, not once per candidate plus once for the check.</summary>
public sealed class PromptTokenizationTests
{
    [Fact]
    public async Task A_jobs_candidates_share_one_tokenization_of_its_prompt()
    {
        using var engine = ReflectiveModelEngine.LoadFrom(TestModel.Directory, new ModelLoadOptions { MaxBatch = 4, MaxSequenceLength = 256 });
        var request = new JobRequest { Prompt = TestModel.Prompt(1), K = 4, Sampling = new() { MaxNewTokens = 8 } };
        engine.CheckPrompt(request);
        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var results = await Task.WhenAll(Enumerable.Range(0, 4).Select(i => engine.GenerateAsync(new CandidateWork("job", i, i, request), deadline.Token)));
        Assert.All(results, r => Assert.Equal(results[0].PromptTokens, r.PromptTokens));
        Assert.Equal(1, engine.PromptTokenizations);

        await engine.GenerateAsync(new CandidateWork("other", 0, 0, request with { Prompt = TestModel.Prompt(2) }), deadline.Token);
        Assert.Equal(2, engine.PromptTokenizations);
    }
}
