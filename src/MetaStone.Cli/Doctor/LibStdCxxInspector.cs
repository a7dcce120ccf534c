using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace MetaStone.Cli.Doctor;

/// <summary>
/// Answers "which libstdc++.so.6 does the dynamic loader pick, and is it new enough for TorchSharp?".
/// TorchSharp 0.107's libLibTorchSharp.so references the symbol version GLIBCXX_3.4.32, which first
/// ships with GCC 13's runtime; an older libstdc++ makes the native load fail.
/// </summary>
public static partial class LibStdCxxInspector
{
    public const string RequiredVersion = "GLIBCXX_3.4.32";

    /// <summary>
    /// True when the file contains the version string. Symbol version definitions are cumulative
    /// (GCC 14's libstdc++ still defines GLIBCXX_3.4.32), so a byte search is what <c>grep -qa</c> does too.
    /// </summary>
    public static bool ProvidesRequiredVersion(string libraryPath) =>
        File.ReadAllBytes(libraryPath).AsSpan().IndexOf(Encoding.ASCII.GetBytes(RequiredVersion)) >= 0;

    /// <summary>The highest GLIBCXX_3.4.N the file defines, e.g. "GLIBCXX_3.4.33", or null.</summary>
    public static string? NewestVersion(string libraryPath)
    {
        var text = Encoding.Latin1.GetString(File.ReadAllBytes(libraryPath));
        var newest = -1;
        foreach (Match match in GlibcxxVersionPattern().Matches(text))
        {
            if (int.TryParse(match.Groups[1].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture, out var minor))
                newest = Math.Max(newest, minor);
        }
        return newest < 0 ? null : $"GLIBCXX_3.4.{newest}";
    }

    /// <summary>The libstdc++ mapped into this process (the .NET runtime itself links it), or null.</summary>
    public static string? FindMappedLibStdCxx(string mapsPath = "/proc/self/maps")
    {
        try
        {
            foreach (var line in File.ReadLines(mapsPath))
            {
                var slash = line.IndexOf('/');
                if (slash >= 0 && line.Contains("/libstdc++.so", StringComparison.Ordinal))
                    return line[slash..].Trim();
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return null;
    }

    /// <summary>The libstdc++.so.6 the dynamic loader resolves from its cache (<c>ldconfig -p</c>), or null.</summary>
    public static string? FindInLdconfigCache()
    {
        // ldconfig lives in /sbin on Debian, which is not on a normal user's PATH.
        string? listing = null;
        foreach (var ldconfig in new[] { "ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig" })
        {
            listing = ExternalTools.TryRun(ldconfig, "-p", TimeSpan.FromSeconds(5));
            if (listing is not null)
                break;
        }
        return listing is null ? null : ParseLdconfigListing(listing, LdconfigArchitectureTag());
    }

    /// <summary>Picks the libstdc++.so.6 line for <paramref name="architectureTag"/> from <c>ldconfig -p</c> output.</summary>
    public static string? ParseLdconfigListing(string listing, string architectureTag)
    {
        string? anyArchitecture = null;
        foreach (var rawLine in listing.Split('\n'))
        {
            var line = rawLine.Trim();
            if (!line.StartsWith("libstdc++.so.6 ", StringComparison.Ordinal))
                continue;
            var arrow = line.IndexOf("=> ", StringComparison.Ordinal);
            if (arrow < 0)
                continue;
            var path = line[(arrow + 3)..].Trim();
            if (line.Contains(architectureTag, StringComparison.Ordinal))
                return path;
            anyArchitecture ??= path;
        }
        return anyArchitecture;
    }

    private static string LdconfigArchitectureTag() =>
        System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture switch
        {
            System.Runtime.InteropServices.Architecture.Arm64 => "AArch64",
            _ => "x86-64",
        };

    [GeneratedRegex(@"GLIBCXX_3\.4\.(\d+)")]
    private static partial Regex GlibcxxVersionPattern();
}
