using MetaStone.Client;
using MetaStone.Cluster.Tests.Infrastructure;
using MetaStone.Contracts;
using Xunit.Abstractions;

namespace MetaStone.Cluster.Tests;

/// <summary>
/// Issue 11 item 8: admission control. A cluster accepts at most MetaStone__MaxRunningJobs running jobs; a submission
/// beyond that is refused with a clear "busy, retry" error, counted, and leaves nothing stored; every accepted job
/// completes. Before: all submissions were accepted, nothing bounded the queue. Real redis-server and silo process.
/// </summary>
public sealed class AdmissionControlTests(ITestOutputHelper output)
{
    private const int Limit = 3;

    [Fact]
    public async Task OverCapacitySubmissionsAreRefusedAsBusyCountedAndNoAcceptedJobIsLost()
    {
        await using var redis = await RedisServer.StartAsync();
        string clusterId = "admit-" + Guid.NewGuid().ToString("N")[..8];
        await using var silo = await SiloProcess.StartAsync("admit-a", redis.ConnectionString, clusterId,
            new Dictionary<string, string> { ["MetaStone__MaxRunningJobs"] = Limit.ToString() });
        await using var client = await MetaStoneClient.ConnectAsync(new ClusterConnection(redis.ConnectionString, clusterId, clusterId));

        // Twelve concurrent submissions of long jobs: the first three to be admitted run for seconds, the rest must bounce.
        var requests = Enumerable.Range(0, 12).Select(i => (Id: $"admit-{i}", Request: new JobRequest
        {
            Prompt = TestModel.Prompt(i), K = 8, Sampling = new() { MaxNewTokens = 200, Temperature = 1.0 }, Seed = 100 * i,
        })).ToList();
        var outcomes = await Task.WhenAll(requests.Select(async r =>
        {
            try { await client.SubmitAsync(r.Request, r.Id); return (r.Id, Error: (Exception?)null); }
            catch (Exception e) { return (r.Id, Error: e); }
        }));
        var accepted = outcomes.Where(o => o.Error is null).Select(o => o.Id).ToList();
        var refused = outcomes.Where(o => o.Error is not null).ToList();
        output.WriteLine($"accepted {accepted.Count}, refused {refused.Count}: {refused.FirstOrDefault().Error?.Message}");

        Assert.Equal(Limit, accepted.Count);
        Assert.All(refused, r =>
        {
            var busy = Assert.IsType<ClusterBusyException>(r.Error);
            Assert.Contains("cluster busy", busy.Message);
            Assert.Contains("submit it again later", busy.Message);
        });
        Assert.Equal(refused.Count, (await client.GetAdmissionAsync()).Refused);
        foreach (var (id, _) in refused) await Assert.ThrowsAsync<KeyNotFoundException>(() => client.GetStatusAsync(id)); // nothing stored for a refused job

        // Every accepted job completes with all its candidates.
        using var patience = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        foreach (var id in accepted)
        {
            var result = await client.AwaitResultAsync(id, patience.Token);
            Assert.Equal(Enumerable.Range(0, 8), result.Candidates.Select(c => c.Index).Order());
        }

        // Once there is room, a refused job submitted again with the same id is accepted and completes.
        string retried = refused[0].Id;
        var again = requests.Single(r => r.Id == retried).Request;
        Assert.Equal(retried, await client.SubmitAsync(again, retried));
        Assert.Equal(8, (await client.AwaitResultAsync(retried, patience.Token)).Candidates.Count);
        Assert.False(silo.HasExited);
    }
}
