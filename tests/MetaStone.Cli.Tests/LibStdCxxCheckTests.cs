using System.Text;
using MetaStone.Cli.Doctor;

namespace MetaStone.Cli.Tests;

public sealed class LibStdCxxCheckTests : IDisposable
{
    private readonly string _scratch = Directory.CreateTempSubdirectory("metastone-libstdcxx-").FullName;

    public void Dispose() => Directory.Delete(_scratch, recursive: true);

    [Fact]
    public void ReportsOkOnThisMachine()
    {
        // This host has GCC 13+'s libstdc++ (setup-host.sh ran); a failure here means the check misreads it.
        var check = new SystemDoctor().CheckLibStdCxx();
        Assert.True(check.Status == DoctorStatus.Ok, check.Detail);
        Assert.Contains("GLIBCXX_3.4.32", check.Detail);
        Assert.Null(check.Fix);
    }

    [Fact]
    public void DetectsTheRequiredVersionInAFileContainingIt()
    {
        var library = WriteFakeLibrary("with.so", "GLIBCXX_3.4.31", "GLIBCXX_3.4.32");
        Assert.True(LibStdCxxInspector.ProvidesRequiredVersion(library));
        Assert.Equal("GLIBCXX_3.4.32", LibStdCxxInspector.NewestVersion(library));
    }

    [Fact]
    public void RejectsAFileLackingIt()
    {
        // GCC 12's runtime: GLIBCXX_3.4.3 is a prefix of the required string and must not count.
        var library = WriteFakeLibrary("without.so", "GLIBCXX_3.4.3", "GLIBCXX_3.4.29", "GLIBCXX_3.4.30");
        Assert.False(LibStdCxxInspector.ProvidesRequiredVersion(library));
        Assert.Equal("GLIBCXX_3.4.30", LibStdCxxInspector.NewestVersion(library));
    }

    [Fact]
    public void PicksTheLdconfigEntryForThisArchitecture()
    {
        const string listing = """
            1234 libs found in cache `/etc/ld.so.cache'
            	libstdc++.so.6 (libc6) => /usr/lib/i386-linux-gnu/libstdc++.so.6
            	libstdc++.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libstdc++.so.6
            	libstdc++fs.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libstdc++fs.so.6
            """;
        Assert.Equal("/lib/x86_64-linux-gnu/libstdc++.so.6", LibStdCxxInspector.ParseLdconfigListing(listing, "x86-64"));
        Assert.Null(LibStdCxxInspector.ParseLdconfigListing("0 libs found", "x86-64"));
    }

    [Fact]
    public void AdvisesSetupHostOnDebian12AndThePpaOnUbuntu2204()
    {
        var debian12 = WriteOsRelease("debian12", "ID=debian", "VERSION_ID=\"12\"", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"");
        var debianAdvice = new SystemDoctor { OsReleasePath = debian12 }.LibStdCxxAdvice();
        Assert.Contains("deploy/setup-host.sh", debianAdvice);
        Assert.Contains("apt-get install -t trixie libstdc++6", debianAdvice);

        var ubuntu2204 = WriteOsRelease("ubuntu2204", "ID=ubuntu", "VERSION_ID=\"22.04\"");
        Assert.Contains("ppa:ubuntu-toolchain-r/test", new SystemDoctor { OsReleasePath = ubuntu2204 }.LibStdCxxAdvice());

        var fedora = WriteOsRelease("fedora", "ID=fedora", "VERSION_ID=40");
        Assert.Contains("GCC >= 13", new SystemDoctor { OsReleasePath = fedora }.LibStdCxxAdvice());
    }

    private string WriteFakeLibrary(string name, params string[] versions)
    {
        // Mimic an ELF .gnu.version_d string table: NUL-separated names among binary noise.
        var path = Path.Combine(_scratch, name);
        using var file = File.Create(path);
        file.Write([0x7f, (byte)'E', (byte)'L', (byte)'F', 0, 1, 2, 3]);
        foreach (var version in versions)
        {
            file.Write(Encoding.ASCII.GetBytes(version));
            file.WriteByte(0);
        }
        return path;
    }

    private string WriteOsRelease(string name, params string[] lines)
    {
        var path = Path.Combine(_scratch, name);
        File.WriteAllLines(path, lines);
        return path;
    }
}
