using MetaStone.Contracts;
using MetaStone.Grains.Sweeps;

namespace MetaStone.Cluster.Tests;

public sealed class FileSweepStoreTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "metastone-sweepstore-" + Guid.NewGuid().ToString("N"));

    private static readonly SweepRequest Request = new()
    {
        Problems = [new SweepProblem("1 + 1", "2")], Ks = [1, 2], Budgets = [16, null],
    };

    private static readonly ModelInfo Model = new("tiny", 1000, 8, 145);

    private static SweepItemResult Item(int i) => new()
    {
        Item = i, Problem = 0, Budget = i == 0 ? 16 : null, JobId = $"s/p0/b{i}",
        Candidates = [new SweepCandidate(0.5, "2", true, 10, 2, "stop"), new SweepCandidate(0.1, null, false, 16, 1, "length")],
    };

    [Fact]
    public async Task ItemsSurviveANewStoreAndATornLastLineIsIgnored()
    {
        var store = new FileSweepStore(_dir);
        Assert.True(await store.CreateAsync("s1", Request, Model, DateTimeOffset.UnixEpoch));
        Assert.False(await store.CreateAsync("s1", Request, Model, DateTimeOffset.UnixEpoch));
        Assert.Equal(1, await store.StartRunAsync("s1"));
        await store.SaveItemAsync("s1", Item(0));
        // The process dies in the middle of writing the next item.
        File.AppendAllText(Path.Combine(_dir, "s1", "items.jsonl"), "{\"item\":1,\"probl");

        var reopened = new FileSweepStore(_dir);
        Assert.Empty(await reopened.RunningSweepsAsync()); // a new process resumes nothing by itself
        var loaded = (await reopened.LoadAsync("s1"))!;
        Assert.Equal(SweepState.Running, loaded.State);
        Assert.Equal([0], loaded.Items.Keys);
        Assert.Equal(Item(0).Candidates, loaded.Items[0].Candidates);
        Assert.Equal(new int?[] { 16, null }, loaded.Request.Budgets);
        Assert.Equal(Model, loaded.Model);

        // The resumed run appends after the torn line without merging into it.
        Assert.Equal(2, await reopened.StartRunAsync("s1"));
        await reopened.SaveItemAsync("s1", Item(1));
        await reopened.EndAsync("s1", SweepState.Completed, null);
        var final = (await new FileSweepStore(_dir).LoadAsync("s1"))!;
        Assert.Equal([0, 1], final.Items.Keys.Order());
        Assert.Equal(SweepState.Completed, final.State);
        Assert.Equal(2, final.Runs);
    }

    [Theory]
    [InlineData("../escape")]
    [InlineData("a/b")]
    [InlineData("..")]
    public void IdsThatAreNotPlainNamesAreRefused(string id) =>
        Assert.Throws<ArgumentException>(() => new FileSweepStore(_dir).SweepDirectory(id));

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}
