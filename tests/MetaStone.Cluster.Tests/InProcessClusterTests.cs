using System.Diagnostics;
using MetaStone.Client;
using MetaStone.Cluster.Tests.Infrastructure;
using MetaStone.Contracts;
using MetaStone.Grains.Engines;
using MetaStone.Model;
using MetaStone.Model.Generation;
using MetaStone.Silo;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace MetaStone.Cluster.Tests;

/// <summary>Two real silos in this process (localhost clustering, loopback sockets) with the tiny model.</summary>
public sealed class InProcessClusterFixture : IAsyncLifetime
{
    public List<IHost> Silos { get; } = [];
    public MetaStoneClient Client { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        int primaryPort = FreePorts.Next();
        string cluster = "inproc-" + Guid.NewGuid().ToString("N")[..8];
        for (int i = 0; i < 2; i++)
        {
            var settings = new SiloSettings
            {
                Name = $"inproc-{i}", Model = TestModel.Directory, ClusterId = cluster, ServiceId = cluster,
                SiloPort = i == 0 ? primaryPort : FreePorts.Next(), GatewayPort = FreePorts.Next(), PrimarySiloPort = primaryPort,
                MaxBatch = 16, MaxSequenceLength = 256, ComputeThreads = 1,
            };
            Silos.Add(await MetaStoneSilo.StartAsync(settings, logging => logging.SetMinimumLevel(LogLevel.Warning)));
        }
        Client = MetaStoneClient.FromGrainFactory(Silos[0].Services.GetRequiredService<IClusterClient>());
        // Both silos' replicas are registered after one heartbeat.
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while ((await Client.GetReplicasAsync()).Count < 2 && DateTime.UtcNow < deadline) await Task.Delay(100);
    }

    public async Task DisposeAsync()
    {
        foreach (var silo in Enumerable.Reverse(Silos))
        {
            await silo.StopAsync(TimeSpan.FromSeconds(10));
            silo.Dispose();
        }
    }
}

public sealed class InProcessClusterTests(InProcessClusterFixture cluster, ITestOutputHelper output) : IClassFixture<InProcessClusterFixture>
{
    [Fact]
    public async Task HighEffortJobReturns32CandidatesTheSprmWinnerAndEngineIdenticalStepScores()
    {
        Assert.Equal(2, (await cluster.Client.GetReplicasAsync()).Count);
        var request = new JobRequest { Prompt = TestModel.Prompt(), Effort = ReasoningEffort.High, Sampling = new() { MaxNewTokens = 160, Temperature = 2.0, TopP = 1.0 }, Seed = 1000 };
        var clock = Stopwatch.StartNew();
        var result = await cluster.Client.RunAsync(request);
        output.WriteLine($"k=32 job in {clock.ElapsedMilliseconds} ms");

        Assert.Equal(32, result.K);
        Assert.Equal(Enumerable.Range(0, 32), result.Candidates.Select(c => c.Index));
        Assert.All(result.Candidates, c => Assert.Equal(request.Seed + c.Index, c.Seed));
        Assert.Equal(2, result.Candidates.Select(c => c.Replica).Distinct().Count()); // both silos worked
        // SPRM Best-of-N: the highest score, first index on ties.
        double best = result.Candidates.Max(c => c.Score);
        Assert.Equal(result.Candidates.First(c => c.Score == best).Index, result.WinnerIndex);
        var winner = result.Winner;
        // A random model rarely writes a step token, so sampling is hot and long enough that some candidates have steps.
        Assert.NotEmpty(winner.StepScores);

        // The engine alone, same seed: the same trajectory; re-encoding it gives the same step scores.
        using var model = ReflectiveModel.Load(TestModel.Directory, new ModelLoadOptions { MaxBatch = 1, MaxSequenceLength = 256 });
        var prompt = model.EncodePrompt(request.Prompt);
        var trajectory = (await model.Engine.GenerateAsync(new GenerationRequest
        {
            PromptIds = prompt, Seeds = [winner.Seed], FirstCandidateIndex = winner.Index,
            Sampling = new SamplingOptions { Temperature = request.Sampling.Temperature, TopP = request.Sampling.TopP, RepetitionPenalty = request.Sampling.RepetitionPenalty, MaxNewTokens = request.Sampling.MaxNewTokens },
        })).Single();
        Assert.Equal(winner.Text, model.Describe(trajectory).Text);
        var reencoded = ReencodeScorer.Score(model.Model, model.Head!, model.StepRules, prompt, trajectory.ResponseIds);
        Assert.Equal(reencoded.Count, winner.StepScores.Length);
        for (int i = 0; i < reencoded.Count; i++)
            Assert.Equal(reencoded[i].Score, winner.StepScores[i], 5);
    }

    [Fact]
    public async Task WatchStreamsStartedFinishedAndCompletedWithTheBestSoFar()
    {
        var request = new JobRequest { Prompt = TestModel.Prompt(1), Effort = ReasoningEffort.Medium, Sampling = new() { MaxNewTokens = 24 }, Seed = 5 };
        string jobId = await cluster.Client.SubmitAsync(request);
        var events = new List<ProgressEvent>();
        await foreach (var e in cluster.Client.WatchAsync(jobId)) events.Add(e);
        Assert.Equal(ProgressKind.Completed, events[^1].Kind);
        Assert.Equal(8, events.Count(e => e.Kind == ProgressKind.CandidateFinished));
        var result = await cluster.Client.AwaitResultAsync(jobId);
        Assert.Equal(result.WinnerIndex, events[^1].BestIndex);
        var status = await cluster.Client.GetStatusAsync(jobId);
        Assert.Equal(JobState.Completed, status.State);
        Assert.Equal(8, status.Finished);
    }

    [Fact]
    public async Task SameSeedGivesTheSameJobResult()
    {
        var request = new JobRequest { Prompt = TestModel.Prompt(2), K = 4, Sampling = new() { MaxNewTokens = 16 }, Seed = 77 };
        var first = await cluster.Client.RunAsync(request);
        var second = await cluster.Client.RunAsync(request);
        Assert.Equal(first.Candidates.Select(c => c.Text), second.Candidates.Select(c => c.Text));
        Assert.Equal(first.WinnerIndex, second.WinnerIndex);
    }
}
