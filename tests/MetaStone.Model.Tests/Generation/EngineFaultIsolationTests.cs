using MetaStone.Model.Generation;

namespace MetaStone.Model.Tests.Generation;

/// <summary>
/// Issue 11 item 1, second half: one failed engine step must fail only the sequences it involved, never every
/// active and queued sequence (the old FailEverything). The real tiny model generates; the engine's test hook
/// makes a real decode step throw (as the native Scalar error did), which the engine must handle like any
/// native error in that step.
/// </summary>
public sealed class EngineFaultIsolationTests : IDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromMinutes(3);
    private readonly ReflectiveModel _tiny = ReflectiveModel.Load(Path.Combine(TestPaths.RepoRoot, "models", "metastone-tiny"),
        new ModelLoadOptions { MaxBatch = 8, MaxSequenceLength = 256 });
    private readonly int[] _prompt;

    public EngineFaultIsolationTests() => _prompt = _tiny.EncodePrompt("Compute 47 + 85 - 29 * 3 from left to right.");

    public void Dispose() => _tiny.Dispose();

    private GenerationEngine Engine(Action<IReadOnlyList<long>>? fault = null) => new(_tiny.Model, _tiny.Head, _tiny.Engine.Options with
    {
        Name = "fault-test-engine",
        FaultInjection = fault,
    });

    private GenerationRequest Request(params long[] seeds) => new()
    {
        PromptIds = _prompt,
        Seeds = seeds,
        Sampling = new SamplingOptions { MaxNewTokens = 60 },
    };

    private static async Task<T> Within<T>(Task<T> task, string what)
    {
        var done = await Task.WhenAny(task, Task.Delay(Deadline));
        Assert.True(done == task, $"{what} did not finish within {Deadline}");
        return await task;
    }

    private async Task<IReadOnlyList<Trajectory>[]> Run(GenerationEngine engine, params GenerationRequest[] requests) =>
        await Within(Task.WhenAll(requests.Select(r => engine.GenerateAsync(r))), "generation");

    [Fact]
    public async Task OneFailedStepRestartsItsSequencesAndLeavesTheQueueAlone()
    {
        // a and b fill all 8 slots; c waits in the queue.
        var a = Request(10, 11, 12, 13);
        var b = Request(20, 21, 22, 23);
        var c = Request(30, 31, 32, 33);
        IReadOnlyList<Trajectory>[] expected;
        using (var clean = Engine()) expected = await Run(clean, a, b, c);

        int decodes = 0;
        using var engine = Engine(_ => { if (++decodes == 5) throw new InvalidOperationException("injected native failure in decode step 5"); });
        var results = await Run(engine, a, b, c);

        for (int r = 0; r < 3; r++)
            for (int i = 0; i < 4; i++)
                Assert.Equal(expected[r][i].ResponseIds, results[r][i].ResponseIds);
        var stats = engine.Stats;
        Assert.Equal(1, stats.FailedSteps);
        Assert.Equal(8, stats.RestartedCandidates); // a and b, not the queued c
        Assert.Equal(0, stats.FailedCandidates);
    }

    [Fact]
    public async Task AFaultThatFollowsOneSequenceFailsOnlyThatSequence()
    {
        const long poisoned = 666;
        using var engine = Engine(seeds => { if (seeds.Contains(poisoned)) throw new InvalidOperationException("injected failure that follows seed 666"); });
        var a = engine.GenerateAsync(Request(10, 11, 12));
        var bad = engine.GenerateAsync(Request(poisoned));
        var b = engine.GenerateAsync(Request(20, 21, 22, 23, 24, 25)); // partly queued behind a and the bad one

        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => Within(bad, "the poisoned request"));
        Assert.Contains("failed in 3 engine attempt(s)", error.Message);
        Assert.Contains("injected failure that follows seed 666", error.Message);
        Assert.Equal(3, (await Within(a, "request a")).Count);
        Assert.Equal(6, (await Within(b, "request b")).Count);
        Assert.Equal(1, engine.Stats.FailedCandidates);

        // The engine is healthy afterwards.
        Assert.Single(await Within(engine.GenerateAsync(Request(40)), "a later request"));
    }

    [Fact]
    public async Task StreamingWatchersAreToldOfARestart()
    {
        int decodes = 0;
        using var engine = Engine(_ => { if (++decodes == 3) throw new InvalidOperationException("injected"); });
        var kinds = new List<CandidateUpdateKind>();
        var stream = Task.Run(async () =>
        {
            await foreach (var u in engine.StreamAsync(Request(7))) kinds.Add(u.Kind);
            return kinds;
        });
        await Within(stream, "the stream");
        Assert.Contains(CandidateUpdateKind.Restarted, kinds);
        Assert.Equal(2, kinds.Count(k => k == CandidateUpdateKind.Started));
        Assert.Equal(CandidateUpdateKind.Finished, kinds[^1]);
    }
}
