using System.Text.RegularExpressions;

namespace MetaStone.Deploy.Tests;

/// <summary>Static checks of deploy/Dockerfile.*: what they COPY exists and reaches the builder, what they build and run.</summary>
public sealed class DockerfileTests
{
    private static IReadOnlyList<string> DockerfileNames() =>
        Directory.EnumerateFiles(Repo.DeployDir, "Dockerfile.*").Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal).ToList();

    public static TheoryData<string> Dockerfiles() => new(DockerfileNames());

    private static Dockerfile Load(string name) => Dockerfile.Load(Path.Combine(Repo.DeployDir, name));

    [Fact]
    public void DeployHasTheThreeImages()
    {
        var names = DockerfileNames();
        Assert.Equal(["Dockerfile.client", "Dockerfile.silo-cpu", "Dockerfile.silo-gpu"], names);
    }

    [Theory]
    [MemberData(nameof(Dockerfiles))]
    public void CopySourcesExistAndAreInTheBuildContext(string name)
    {
        var dockerfile = Load(name);
        var ignore = DockerIgnore.ForRepository();
        var stageNames = new List<string>();
        foreach (var stage in dockerfile.Stages)
        {
            foreach (var copy in stage.Instructions.Where(i => i.Keyword is "COPY" or "ADD"))
            {
                if (copy.Flags.TryGetValue("from", out var from))
                {
                    // Stage-to-stage copies must name an earlier stage (or be an explicit image reference).
                    Assert.True(stageNames.Contains(from) || from.Contains(':', StringComparison.Ordinal) || from.Contains('/', StringComparison.Ordinal),
                        $"{name}:{copy.Line}: COPY --from={from} names no earlier stage");
                    continue;
                }
                var words = copy.Words;
                Assert.True(words.Count >= 2, $"{name}:{copy.Line}: COPY needs a source and a destination");
                foreach (var source in words.Take(words.Count - 1))
                {
                    Assert.False(source.Contains('*', StringComparison.Ordinal), $"{name}:{copy.Line}: avoid globs in COPY ({source}) so this check stays exact");
                    var full = Repo.Full(source);
                    Assert.True(File.Exists(full) || Directory.Exists(full), $"{name}:{copy.Line}: COPY source '{source}' does not exist in the repository");
                    Assert.False(ignore.IsExcluded(source), $"{name}:{copy.Line}: COPY source '{source}' is excluded by .dockerignore");
                }
            }
            if (stage.Alias is not null) stageNames.Add(stage.Alias);
        }
    }

    [Theory]
    [MemberData(nameof(Dockerfiles))]
    public void BaseImagesShipGcc13LibStdCxx(string name)
    {
        // libLibTorchSharp.so needs GLIBCXX_3.4.32: Ubuntu 24.04 (noble) has it, the Debian 12 .NET tags do not.
        var dockerfile = Load(name);
        var stageAliases = dockerfile.Stages.Select(stage => stage.Alias).OfType<string>().ToHashSet();
        foreach (var stage in dockerfile.Stages.Where(stage => !stageAliases.Contains(stage.BaseImage)))
            Assert.True(stage.BaseImage.Contains("noble", StringComparison.Ordinal) || stage.BaseImage.Contains("ubuntu24.04", StringComparison.Ordinal),
                $"{name}: base image {stage.BaseImage} is not Ubuntu 24.04 based");
    }

    [Theory]
    [MemberData(nameof(Dockerfiles))]
    public void FinalImageIsRuntimeOnlyNonRootAndRunsThePublishedDll(string name)
    {
        var dockerfile = Load(name);
        var final = dockerfile.Final;
        Assert.DoesNotContain("/sdk:", final.BaseImage, StringComparison.Ordinal);
        var build = dockerfile.BuildStage;
        Assert.NotSame(build, final);

        var users = final.All("USER").Select(user => Dockerfile.Substitute(user.Arguments.Trim(), dockerfile.ArgsOf(final))).ToList();
        Assert.NotEmpty(users);
        Assert.DoesNotContain(users[^1], new[] { "root", "0", "0:0", "root:root" });

        // The published folder is what the final image gets, and the entry point is its dll.
        var copy = final.All("COPY").Single(c => c.Flags.GetValueOrDefault("from") == build.Alias);
        Assert.Equal("/out", copy.Words[0]);
        var entry = final.All("ENTRYPOINT").Single().Words;
        Assert.Equal("dotnet", entry[0]);
        Assert.Matches(@"^/app/[\w.-]+\.dll$", entry[1]);
        Assert.Equal("/app", final.All("WORKDIR").Last().Arguments.Trim());
    }

    [Theory]
    [InlineData("Dockerfile.silo-gpu", "src/MetaStone.Silo", "cuda", "MetaStone.Silo.dll")]
    [InlineData("Dockerfile.silo-cpu", "src/MetaStone.Silo", "cpu", "MetaStone.Silo.dll")]
    [InlineData("Dockerfile.client", "src/MetaStone.Cli", "cpu", "metastone.dll")]
    public void PublishesTheRightProjectWithTheRightBackend(string name, string project, string backend, string entryDll)
    {
        var dockerfile = Load(name);
        var run = dockerfile.PublishRun.Rest;
        Assert.Matches(new Regex($@"^dotnet publish {Regex.Escape(project)} -c \$\{{CONFIGURATION\}} -p:TorchBackend={backend} -o /out$"), run.Trim());
        Assert.Equal("Release", dockerfile.ArgsOf(dockerfile.BuildStage)["CONFIGURATION"]);
        // The package cache is a BuildKit cache mount, never a layer of any image.
        Assert.StartsWith("type=cache", dockerfile.PublishRun.Flags["mount"], StringComparison.Ordinal);
        Assert.EndsWith("/" + entryDll, dockerfile.Final.All("ENTRYPOINT").Single().Words[1], StringComparison.Ordinal);
    }

    [Fact]
    public void GpuAndCpuSiloBuildTheSameWayApartFromTheBackend()
    {
        var gpu = Load("Dockerfile.silo-gpu");
        var cpu = Load("Dockerfile.silo-cpu");
        Assert.Equal(cpu.PublishRun.Rest.Replace("TorchBackend=cpu", "TorchBackend=cuda", StringComparison.Ordinal), gpu.PublishRun.Rest);
        Assert.Equal(
            cpu.BuildStage.All("COPY").Select(c => c.Arguments),
            gpu.BuildStage.All("COPY").Select(c => c.Arguments));
        // CUDA 12.8 is what libtorch in TorchSharp-cuda-linux 0.107 is built against.
        Assert.Contains("nvidia/cuda:12.8", gpu.GlobalArgs["CUDA_IMAGE"], StringComparison.Ordinal);
        Assert.Equal(gpu.GlobalArgs["CUDA_IMAGE"], gpu.Final.BaseImage);
    }

    [Theory]
    [InlineData("Dockerfile.silo-gpu", "cuda:0")]
    [InlineData("Dockerfile.silo-cpu", "cpu")]
    public void SiloImagesDefaultEveryContractSettingAndHaveAHealthCheck(string name, string device)
    {
        var final = Load(name).Final;
        var env = string.Join(' ', final.All("ENV").Select(e => e.Arguments));
        // Orleans__Name and AdvertisedIPAddress have no sensible image default: compose sets them per silo.
        foreach (var key in ComposeRules.SiloContractKeys.Except(["Orleans__Name", "Orleans__Endpoints__AdvertisedIPAddress"]))
            Assert.Matches(new Regex($@"(^|\s){Regex.Escape(key)}=\S+"), env);
        Assert.Contains($"MetaStone__Devices={device}", env, StringComparison.Ordinal);
        Assert.Contains("MetaStone__Model=/models/", env, StringComparison.Ordinal);

        var health = final.All("HEALTHCHECK").Single();
        Assert.Contains("Orleans__Endpoints__GatewayPort", health.Arguments, StringComparison.Ordinal);
        Assert.Equal(["11111", "30000"], final.All("EXPOSE").Single().Words);
        // The dashboard and metrics are ASP.NET Core endpoints: the image needs the aspnet runtime, and they listen beyond loopback.
        Assert.Contains("dotnet/aspnet:10.0", Load(name).GlobalArgs["RUNTIME_IMAGE"], StringComparison.Ordinal);
        Assert.Contains("MetaStone__HttpAddress=0.0.0.0", env, StringComparison.Ordinal);
    }

    [Fact]
    public void DockerIgnoreKeepsHostBuildOutputAndModelsOut()
    {
        var ignore = DockerIgnore.ForRepository();
        Assert.True(ignore.IsExcluded("src/MetaStone.Cli/bin/Release/metastone.dll"));
        Assert.True(ignore.IsExcluded("src/MetaStone.Model/obj/project.assets.json"));
        Assert.True(ignore.IsExcluded("models/metastone-tiny/tokenizer.json"));
        Assert.True(ignore.IsExcluded(".git"));
        Assert.False(ignore.IsExcluded("src/MetaStone.Cli/Program.cs"));
        Assert.False(ignore.IsExcluded("Directory.Build.props"));
    }

    [Fact]
    public void DeployReadmeDocumentsTheContractAndEveryImage()
    {
        var readme = File.ReadAllText(Path.Combine(Repo.DeployDir, "README.md"));
        var contract = readme.IndexOf("## Silo configuration contract", StringComparison.Ordinal);
        Assert.True(contract >= 0, "deploy/README.md needs a '## Silo configuration contract' section");
        var section = readme[contract..];
        var next = section.IndexOf("\n## ", 3, StringComparison.Ordinal);
        if (next > 0) section = section[..next];
        foreach (var key in ComposeRules.SiloContractKeys)
            Assert.True(section.Contains($"`{key}`", StringComparison.Ordinal), $"{key} is not in the silo configuration contract");
        foreach (var name in DockerfileNames())
            Assert.Contains(name, readme, StringComparison.Ordinal);
    }
}
