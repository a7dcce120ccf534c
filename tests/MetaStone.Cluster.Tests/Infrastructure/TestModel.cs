using MetaStone.Model;
using MetaStone.Model.Checkpoints;
using MetaStone.Training.Tasks;
using static TorchSharp.torch;

[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace MetaStone.Cluster.Tests.Infrastructure;

/// <summary>
/// A complete model directory for the cluster tests, built once per test run: the random tiny Qwen2 fixture, the
/// arithmetic task's tokenizer and a random SPRM head. Its quality is irrelevant; its determinism is what counts.
/// </summary>
public static class TestModel
{
    private static readonly Lazy<string> Built = new(Build, LazyThreadSafetyMode.ExecutionAndPublication);

    public static string Directory => Built.Value;

    public static string Prompt(int n = 0) => ArithmeticChainTask.PromptFor($"{3 + n} + 4 * 2 - {n}");

    private static string Build()
    {
        string root = Path.Combine(Path.GetTempPath(), $"metastone-cluster-tests-{Environment.ProcessId}");
        string dir = Path.Combine(root, "model");
        // Silo processes are killed by their fixtures before the test host exits, so nothing uses it by then.
        AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { System.IO.Directory.Delete(root, recursive: true); } catch (IOException) { } };
        System.IO.Directory.CreateDirectory(dir);
        string fixture = Path.Combine(RepoRoot(), "tests", "fixtures", "qwen2-tiny-random");
        foreach (var file in new[] { "config.json", "model.safetensors" })
            File.Copy(Path.Combine(fixture, file), Path.Combine(dir, file), overwrite: true);
        new TaskTokenizerBuilder().BuildForTask(new ArithmeticChainTask(), dir);
        manual_seed(7);
        using var head = new SprmHead(64, CPU);
        SafeTensors.Save(Path.Combine(dir, ReflectiveModel.HeadSafetensorsName), head.StateDict());
        return dir;
    }

    public static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "MetaStone.Cluster.sln"))) return d.FullName;
        throw new InvalidOperationException("cannot find the repository root (MetaStone.Cluster.sln) above " + AppContext.BaseDirectory);
    }
}
