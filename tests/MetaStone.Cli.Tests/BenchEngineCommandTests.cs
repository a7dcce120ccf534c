using System.CommandLine;
using System.Text.Json;

namespace MetaStone.Cli.Tests;

/// <summary>
/// <c>bench engine</c> on a 2-layer tiny shape with 4 candidates × 8 tokens: checks the report's structure and the
/// exact counters, never timings (the machine is shared and noisy).
/// </summary>
public sealed class BenchEngineCommandTests
{
    [Fact]
    public async Task TinyRunReportsEveryMetric()
    {
        var outFile = Path.Combine(Path.GetTempPath(), "metastone-bench-" + Guid.NewGuid().ToString("N") + ".json");
        using var output = new StringWriter();
        using var error = new StringWriter();
        try
        {
            var exitCode = await CliRootCommand.Create()
                .Parse(["bench", "engine", "--shapes", "tiny", "--n", "4", "--new-tokens", "8", "--tiny-layers", "2", "--json", "--out", outFile])
                .InvokeAsync(new InvocationConfiguration { Output = output, Error = error });
            Assert.True(exitCode == 0, error.ToString());

            using var report = JsonDocument.Parse(output.ToString());
            Assert.Equal(output.ToString().Trim(), File.ReadAllText(outFile).Trim());
            var shape = Assert.Single(report.RootElement.GetProperty("shapes").EnumerateArray());
            Assert.Equal("tiny", shape.GetProperty("shape").GetString());
            Assert.Equal(2, shape.GetProperty("layers").GetInt32());
            Assert.Equal("float32", shape.GetProperty("dtype").GetString());
            Assert.Equal(4, shape.GetProperty("candidates").GetInt32());
            Assert.Equal(8, shape.GetProperty("newTokens").GetInt32());

            var batching = shape.GetProperty("batching");
            // Decode rates are wall time minus a time-to-first-token run: with 8 tokens on a busy machine that
            // difference can come out at or below zero, so only the end-to-end figure must be positive here.
            foreach (var name in new[] { "batchedDecodeTokensPerSecond", "sequentialDecodeTokensPerSecond", "decodeSpeedup" })
                Assert.True(batching.TryGetProperty(name, out _), name);
            Assert.True(batching.GetProperty("endToEndSpeedup").GetDouble() > 0, "endToEndSpeedup");

            var prefill = shape.GetProperty("prefill");
            Assert.Equal(64, prefill.GetProperty("sharedTokensComputed").GetInt64());
            Assert.Equal(3 * 64, prefill.GetProperty("sharedTokensReused").GetInt64());
            Assert.Equal(4 * 64, prefill.GetProperty("separateTokensComputed").GetInt64());
            Assert.Equal(4.0, prefill.GetProperty("ratio").GetDouble());

            var scoring = shape.GetProperty("scoring");
            foreach (var name in new[] { "scoredSeconds", "unscoredSeconds", "reencodeSeconds", "reencodePipelineSeconds", "inFlightSpeedupOverReencode" })
                Assert.True(scoring.GetProperty(name).GetDouble() > 0, name);
            Assert.True(scoring.TryGetProperty("overheadPercent", out _));
            // Same seeds with and without scoring give the same trajectories, so both ways find the same steps.
            Assert.Equal(scoring.GetProperty("reencodeStepsScored").GetInt64(), scoring.GetProperty("stepsScored").GetInt64());

            var compute = shape.GetProperty("compute");
            // The decode FLOP rates come from the same decode time as the decode rates above (run minus first token), so
            // they too can be ≤ 0 with 8 tokens: present, and finite.
            foreach (var name in new[] { "decodeFlopsPerSecond", "decodeFlopsPerSecondWithAttention", "fractionOfMatmul" })
                Assert.True(compute.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number, name);
            foreach (var name in new[] { "matmulFlopsPerSecond", "forwardStepMillisecondsBatched", "forwardStepMillisecondsSingle" })
                Assert.True(compute.GetProperty(name).GetDouble() > 0, name);
        }
        finally
        {
            File.Delete(outFile);
        }
    }

    [Fact]
    public async Task UnknownShapeIsAUsageError()
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        var exitCode = await CliRootCommand.Create()
            .Parse(["bench", "engine", "--shapes", "tiny,huge"])
            .InvokeAsync(new InvocationConfiguration { Output = output, Error = error });
        Assert.Equal(2, exitCode);
        Assert.Contains("unknown shape 'huge'", error.ToString());
    }
}
