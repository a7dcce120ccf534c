using System.CommandLine;
using System.Text.Json;
using MetaStone.Cli;

namespace MetaStone.Cluster.Tests;

/// <summary><c>metastone bench gateway --json</c> runs end to end (instant engine, smallest sizes) and reports both ratios from its own measurements.</summary>
public sealed class GatewayBenchCommandTests
{
    [Fact]
    public void Bench_gateway_reports_the_overhead_and_streaming_ratios_as_json()
    {
        var output = new StringWriter();
        int exit = CliRootCommand.Create().Parse(["bench", "gateway", "--engine", "instant", "--pairs", "3", "--clients", "2", "--jobs-per-client", "2",
                "--round-pairs", "2", "--json"])
            .Invoke(new InvocationConfiguration { Output = output, Error = new StringWriter() });
        Assert.Equal(0, exit);
        using var json = JsonDocument.Parse(output.ToString());
        var overhead = json.RootElement.GetProperty("overhead");
        Assert.Equal(3, overhead.GetProperty("pairs").GetArrayLength());
        var pairs = overhead.GetProperty("pairs").EnumerateArray().Select(p => p.GetProperty("httpSeconds").GetDouble() / p.GetProperty("orleansSeconds").GetDouble()).Order().ToArray();
        Assert.Equal(pairs[1], overhead.GetProperty("ratio").GetDouble(), 9); // the median of the three measured pairs
        var streaming = json.RootElement.GetProperty("streaming");
        var rounds = streaming.GetProperty("rounds").EnumerateArray().ToList();
        Assert.Equal(4, rounds.Count);
        Assert.Equal(2, rounds.Count(r => r.GetProperty("streaming").GetBoolean()));
        Assert.All(rounds, r => Assert.Equal(4, r.GetProperty("jobs").GetInt32()));
        double on = rounds.Where(r => r.GetProperty("streaming").GetBoolean()).Sum(r => r.GetProperty("jobs").GetInt32())
            / rounds.Where(r => r.GetProperty("streaming").GetBoolean()).Sum(r => r.GetProperty("seconds").GetDouble());
        Assert.Equal(on, streaming.GetProperty("streamingJobsPerSecond").GetDouble(), 6);
        Assert.True(streaming.GetProperty("ratio").GetDouble() > 0);
    }
}
