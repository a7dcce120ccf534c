using System.Text.Json;
using MetaStone.Model.Checkpoints;
using TorchSharp;

namespace MetaStone.Model.Tests.Checkpoints;

public sealed class CheckpointDirectoryTests
{
    [Fact]
    public void ShardedRoundTripLoadsEqualTensors()
    {
        using var dir = new TempDirectory();
        var original = SafeTensorsTests.MakeMixedTensors();
        try
        {
            CheckpointDirectory.SaveSharded(dir.Path, original, maxShardBytes: 64);

            var shardFiles = Directory.GetFiles(dir.Path, "model-*-of-*.safetensors");
            Assert.True(shardFiles.Length >= 2, $"expected several shards, got {shardFiles.Length}");
            Assert.False(File.Exists(dir.File(CheckpointDirectory.SingleFileName)));

            using (var index = JsonDocument.Parse(File.ReadAllText(dir.File(CheckpointDirectory.IndexFileName))))
            {
                long expectedTotal = original.Values.Sum(t => t.numel() * t.element_size());
                Assert.Equal(expectedTotal, index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64());
                var weightMap = index.RootElement.GetProperty("weight_map").EnumerateObject().ToList();
                Assert.Equal(original.Keys.Order(), weightMap.Select(p => p.Name).Order());
                Assert.Equal(shardFiles.Length, weightMap.Select(p => p.Value.GetString()).Distinct().Count());
            }

            var locations = CheckpointDirectory.ReadTensorLocations(dir.Path);
            Assert.Equal(new long[] { 4, 7 }, locations["bf16"].Entry.Shape);

            var loaded = CheckpointDirectory.Load(dir.Path);
            try
            {
                Assert.Equal(original.Keys.Order(), loaded.Keys.Order());
                foreach (var (name, tensor) in original)
                    TensorAssert.BitwiseEqual(tensor, loaded[name], name);
            }
            finally
            {
                TensorAssert.DisposeAll(loaded.Values);
            }
        }
        finally
        {
            TensorAssert.DisposeAll(original.Values);
        }
    }

    [Fact]
    public void SmallCheckpointIsWrittenAsSingleFile()
    {
        using var dir = new TempDirectory();
        using var weight = torch.randn(2, 2);
        CheckpointDirectory.SaveSharded(dir.Path, new Dictionary<string, torch.Tensor> { ["w"] = weight }, maxShardBytes: 1 << 20);
        Assert.True(File.Exists(dir.File(CheckpointDirectory.SingleFileName)));
        Assert.False(File.Exists(dir.File(CheckpointDirectory.IndexFileName)));

        var loaded = CheckpointDirectory.Load(dir.Path);
        try
        {
            TensorAssert.BitwiseEqual(weight, loaded["w"], "w");
        }
        finally
        {
            TensorAssert.DisposeAll(loaded.Values);
        }
    }

    [Fact]
    public void MissingShardIsNamedInTheError()
    {
        using var dir = new TempDirectory();
        var original = SafeTensorsTests.MakeMixedTensors();
        try
        {
            CheckpointDirectory.SaveSharded(dir.Path, original, maxShardBytes: 64);
        }
        finally
        {
            TensorAssert.DisposeAll(original.Values);
        }
        string missing = Path.GetFileName(Directory.GetFiles(dir.Path, "model-*-of-*.safetensors").Order().Last());
        File.Delete(dir.File(missing));

        var error = Assert.Throws<CheckpointFormatException>(() => CheckpointDirectory.Load(dir.Path));
        Assert.Contains($"shard '{missing}'", error.Message);
        Assert.Contains("does not exist", error.Message);
    }

    [Fact]
    public void IndexNamingTensorAbsentFromItsShardIsRejected()
    {
        using var dir = new TempDirectory();
        using var weight = torch.randn(2, 2);
        SafeTensors.Save(dir.File("model-00001-of-00001.safetensors"), new Dictionary<string, torch.Tensor> { ["w"] = weight });
        File.WriteAllText(dir.File(CheckpointDirectory.IndexFileName),
            """{"metadata":{"total_size":16},"weight_map":{"w":"model-00001-of-00001.safetensors","ghost":"model-00001-of-00001.safetensors"}}""");

        var error = Assert.Throws<CheckpointFormatException>(() => CheckpointDirectory.Load(dir.Path));
        Assert.Contains("tensor 'ghost'", error.Message);
        Assert.Contains("does not contain it", error.Message);
    }

    [Fact]
    public void IndexPointingOutsideTheDirectoryIsRejected()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File(CheckpointDirectory.IndexFileName),
            """{"metadata":{},"weight_map":{"w":"../elsewhere/model.safetensors"}}""");
        var error = Assert.Throws<CheckpointFormatException>(() => CheckpointDirectory.Load(dir.Path));
        Assert.Contains("not a plain file name", error.Message);
    }

    [Fact]
    public void EmptyDirectoryIsRejected()
    {
        using var dir = new TempDirectory();
        var error = Assert.Throws<CheckpointFormatException>(() => CheckpointDirectory.Load(dir.Path));
        Assert.Contains("neither 'model.safetensors' nor 'model.safetensors.index.json'", error.Message);
    }
}
