using System.Text.RegularExpressions;

namespace MetaStone.Deploy.Tests;

/// <summary>
/// The build stage of each Dockerfile, replayed outside Docker: its COPY lines fill a fresh directory from the
/// repository (minus .dockerignore'd paths) and its exact `dotnet publish` line runs there. This proves the
/// Dockerfile copies everything the build needs and that the published folder holds what ENTRYPOINT runs.
/// The GPU image's line differs only by -p:TorchBackend=cuda (DockerfileTests) and is not run here: it
/// restores several GB of CUDA libtorch.
/// </summary>
public sealed class PublishTests
{
    [Fact]
    public void ClientBuildStageWorksOutsideDocker() => ReplayBuildStage("Dockerfile.client");

    [SiloFact]
    public void CpuSiloBuildStageWorksOutsideDocker() => ReplayBuildStage("Dockerfile.silo-cpu");

    private static void ReplayBuildStage(string name)
    {
        var dockerfile = Dockerfile.Load(Path.Combine(Repo.DeployDir, name));
        var stage = dockerfile.BuildStage;
        var args = dockerfile.ArgsOf(stage);
        var ignore = DockerIgnore.ForRepository();
        var root = Directory.CreateTempSubdirectory("metastone-publish-").FullName;
        try
        {
            // Container paths map to <root><path>; WORKDIR and COPY are applied in order up to the publish RUN.
            string Host(string containerPath) => Path.Combine(root, containerPath.TrimStart('/'));
            var workdir = "/";
            foreach (var instruction in stage.Instructions)
            {
                if (instruction.Keyword == "WORKDIR")
                {
                    var dir = instruction.Arguments.Trim();
                    workdir = dir.StartsWith('/') ? dir : Path.Combine(workdir, dir);
                    Directory.CreateDirectory(Host(workdir));
                }
                else if (instruction.Keyword == "COPY" && !instruction.Flags.ContainsKey("from"))
                {
                    var words = instruction.Words;
                    var destination = words[^1].StartsWith('/') ? words[^1] : Path.Combine(workdir, words[^1]);
                    foreach (var source in words.Take(words.Count - 1))
                        CopyFromContext(source, Host(destination), words.Count > 2 || words[^1].EndsWith('/'), ignore);
                }
                else if (instruction == dockerfile.PublishRun)
                {
                    break;
                }
            }

            var command = Dockerfile.Substitute(dockerfile.PublishRun.Rest.Trim(), args);
            var outDir = Regex.Match(command, @"-o\s+(/\S+)").Groups[1].Value;
            Assert.False(string.IsNullOrEmpty(outDir), $"{name}: the publish line has no absolute -o folder: {command}");
            command = command.Replace($"-o {outDir}", $"-o {Host(outDir)}", StringComparison.Ordinal);

            var result = ProcessRunner.Run("/bin/sh", ["-c", command], Host(workdir), TimeSpan.FromMinutes(20),
                new Dictionary<string, string?>
                {
                    ["DOTNET_NOLOGO"] = "1",
                    ["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1",
                    // No build servers left behind holding this test's output pipes open.
                    ["MSBUILDDISABLENODEREUSE"] = "1",
                    ["DOTNET_CLI_USE_MSBUILD_SERVER"] = "0",
                    ["UseSharedCompilation"] = "false",
                },
                lowPriority: true);
            Assert.True(result.ExitCode == 0, $"{name}: `{command}` failed ({result.ExitCode}):\n{result.Tail()}");

            // What the final image runs must be in the published folder, with torch's native libraries
            // (the final image has no NuGet cache to find them in).
            var entry = Path.GetFileName(dockerfile.Final.All("ENTRYPOINT").Single().Words[1]);
            var published = Host(outDir);
            Assert.True(File.Exists(Path.Combine(published, entry)), $"{name}: {entry} (ENTRYPOINT) is not in the publish output");
            Assert.True(File.Exists(Path.Combine(published, Path.ChangeExtension(entry, ".runtimeconfig.json"))), $"{name}: no runtimeconfig for {entry}");
            foreach (var native in new[] { "libLibTorchSharp.so", "libtorch_cpu.so" })
                Assert.True(File.Exists(Path.Combine(published, native)), $"{name}: {native} is not in the publish output");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    /// <summary>COPY semantics: a directory's contents go into the destination folder; a file goes to it or into it.</summary>
    private static void CopyFromContext(string source, string destination, bool destinationIsDirectory, DockerIgnore ignore)
    {
        var full = Repo.Full(source);
        if (File.Exists(full))
        {
            var target = destinationIsDirectory ? Path.Combine(destination, Path.GetFileName(full)) : destination;
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(full, target, overwrite: true);
            return;
        }
        Assert.True(Directory.Exists(full), $"COPY source {source} does not exist");
        foreach (var file in Directory.EnumerateFiles(full, "*", SearchOption.AllDirectories))
        {
            var relative = Path.GetRelativePath(Repo.Root, file).Replace('\\', '/');
            if (ignore.IsExcluded(relative)) continue;
            var target = Path.Combine(destination, Path.GetRelativePath(full, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target, overwrite: true);
        }
    }
}
