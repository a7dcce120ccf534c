using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace MetaStone.Deploy.Tests;

/// <summary>One Dockerfile instruction with continuations joined; <see cref="Line"/> is where it starts.</summary>
internal sealed record Instruction(string Keyword, string Arguments, int Line)
{
    /// <summary>Leading <c>--flag[=value]</c> options (COPY --from, RUN --mount, HEALTHCHECK --interval...).</summary>
    public IReadOnlyDictionary<string, string> Flags => SplitFlags().Flags;

    /// <summary>The arguments after the flags, as words (JSON exec form is decoded).</summary>
    public IReadOnlyList<string> Words
    {
        get
        {
            var rest = SplitFlags().Remainder;
            if (rest.StartsWith('['))
            {
                try { return JsonSerializer.Deserialize<string[]>(rest) ?? []; }
                catch (JsonException) { /* not JSON after all: shell form */ }
            }
            return rest.Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
        }
    }

    /// <summary>The arguments after the flags, as text (the shell command of a RUN).</summary>
    public string Rest => SplitFlags().Remainder;

    private (Dictionary<string, string> Flags, string Remainder) SplitFlags()
    {
        var flags = new Dictionary<string, string>(StringComparer.Ordinal);
        var rest = Arguments.TrimStart();
        while (rest.StartsWith("--", StringComparison.Ordinal))
        {
            var end = rest.IndexOfAny([' ', '\t']);
            var flag = end < 0 ? rest : rest[..end];
            var eq = flag.IndexOf('=', StringComparison.Ordinal);
            flags[eq < 0 ? flag[2..] : flag[2..eq]] = eq < 0 ? "" : flag[(eq + 1)..];
            rest = end < 0 ? "" : rest[end..].TrimStart();
        }
        return (flags, rest);
    }
}

/// <summary>A build stage: the FROM image (build args applied), its alias, and its instructions.</summary>
internal sealed record Stage(string BaseImage, string? Alias, IReadOnlyList<Instruction> Instructions)
{
    public IEnumerable<Instruction> All(string keyword) => Instructions.Where(i => i.Keyword == keyword);
}

/// <summary>Enough of a Dockerfile parser for the deploy checks: instructions, stages, build-arg defaults.</summary>
internal sealed partial class Dockerfile
{
    private Dockerfile(string path, IReadOnlyDictionary<string, string> globalArgs, IReadOnlyList<Stage> stages)
    {
        Path = path;
        GlobalArgs = globalArgs;
        Stages = stages;
    }

    public string Path { get; }
    public string Name => System.IO.Path.GetFileName(Path);

    /// <summary>ARG defaults declared before the first FROM (usable in FROM lines).</summary>
    public IReadOnlyDictionary<string, string> GlobalArgs { get; }
    public IReadOnlyList<Stage> Stages { get; }
    public Stage Final => Stages[^1];

    /// <summary>The stage whose RUN publishes the application.</summary>
    public Stage BuildStage => Stages.Single(stage => stage.All("RUN").Any(run => run.Rest.Contains("dotnet publish", StringComparison.Ordinal)));

    public Instruction PublishRun => BuildStage.All("RUN").Single(run => run.Rest.Contains("dotnet publish", StringComparison.Ordinal));

    [GeneratedRegex(@"\$\{(?<name>[A-Za-z_][A-Za-z0-9_]*)\}|\$(?<name>[A-Za-z_][A-Za-z0-9_]*)")]
    private static partial Regex Variable();

    public static string Substitute(string text, IReadOnlyDictionary<string, string> args) =>
        Variable().Replace(text, match => args.TryGetValue(match.Groups["name"].Value, out var value) ? value : match.Value);

    /// <summary>ARG defaults visible inside <paramref name="stage"/> (stage ARGs, then global ones).</summary>
    public IReadOnlyDictionary<string, string> ArgsOf(Stage stage)
    {
        var args = new Dictionary<string, string>(GlobalArgs, StringComparer.Ordinal);
        foreach (var arg in stage.All("ARG"))
        {
            var text = arg.Arguments.Trim();
            var eq = text.IndexOf('=', StringComparison.Ordinal);
            if (eq > 0) args[text[..eq]] = text[(eq + 1)..];
        }
        return args;
    }

    public static Dockerfile Load(string path)
    {
        var instructions = new List<Instruction>();
        var lines = File.ReadAllLines(path);
        var current = new StringBuilder();
        var start = 0;
        for (var i = 0; i < lines.Length; i++)
        {
            var line = lines[i].TrimEnd();
            // Comment lines are dropped, even inside a continued instruction (as BuildKit does).
            if (line.TrimStart().StartsWith('#') || (line.Length == 0 && current.Length == 0)) continue;
            if (current.Length == 0) start = i + 1;
            var continued = line.EndsWith('\\');
            current.Append(continued ? line[..^1] : line).Append(' ');
            if (continued) continue;
            var text = current.ToString().Trim();
            current.Clear();
            if (text.Length == 0) continue;
            var space = text.IndexOfAny([' ', '\t']);
            instructions.Add(new Instruction(
                (space < 0 ? text : text[..space]).ToUpperInvariant(), space < 0 ? "" : text[(space + 1)..].Trim(), start));
        }
        if (current.Length > 0) throw new FormatException($"{path}: ends inside a continued line");

        var globalArgs = new Dictionary<string, string>(StringComparer.Ordinal);
        var stages = new List<Stage>();
        List<Instruction>? body = null;
        string? image = null, alias = null;
        foreach (var instruction in instructions)
        {
            if (instruction.Keyword == "FROM")
            {
                if (body is not null) stages.Add(new Stage(image!, alias, body));
                var words = instruction.Words;
                image = Substitute(words[0], globalArgs);
                alias = words.Count >= 3 && words[1].Equals("AS", StringComparison.OrdinalIgnoreCase) ? words[2] : null;
                body = [];
            }
            else if (body is null)
            {
                if (instruction.Keyword != "ARG") throw new FormatException($"{path}:{instruction.Line}: only ARG may come before FROM");
                var text = instruction.Arguments.Trim();
                var eq = text.IndexOf('=', StringComparison.Ordinal);
                globalArgs[eq < 0 ? text : text[..eq]] = eq < 0 ? "" : text[(eq + 1)..];
            }
            else
            {
                body.Add(instruction);
            }
        }
        if (body is null) throw new FormatException($"{path}: no FROM");
        stages.Add(new Stage(image!, alias, body));
        return new Dockerfile(path, globalArgs, stages);
    }
}

/// <summary>
/// .dockerignore matching for the patterns this repository uses: Go-style globs with <c>**</c>, <c>!</c> exceptions,
/// last match wins, and an excluded directory excludes everything below it.
/// </summary>
internal sealed class DockerIgnore
{
    private readonly List<(Regex Pattern, bool Exclude)> _rules = [];

    public DockerIgnore(IEnumerable<string> lines)
    {
        foreach (var raw in lines)
        {
            var line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#')) continue;
            var exclude = !line.StartsWith('!');
            var pattern = (exclude ? line : line[1..]).Trim().TrimStart('/').TrimEnd('/');
            _rules.Add((new Regex("^" + GlobToRegex(pattern) + "$", RegexOptions.CultureInvariant), exclude));
        }
    }

    public static DockerIgnore ForRepository() => new(File.ReadAllLines(System.IO.Path.Combine(Repo.Root, ".dockerignore")));

    /// <summary>True when <paramref name="relativePath"/> (from the context root, '/' separated) is not sent to the builder.</summary>
    public bool IsExcluded(string relativePath)
    {
        var segments = relativePath.Replace('\\', '/').Trim('/').Split('/', StringSplitOptions.RemoveEmptyEntries);
        for (var depth = 1; depth <= segments.Length; depth++)
        {
            var prefix = string.Join('/', segments.Take(depth));
            var excluded = false;
            foreach (var (pattern, exclude) in _rules)
                if (pattern.IsMatch(prefix)) excluded = exclude;
            if (excluded) return true;
        }
        return false;
    }

    private static string GlobToRegex(string glob)
    {
        var regex = new StringBuilder();
        for (var i = 0; i < glob.Length; i++)
        {
            var c = glob[i];
            if (c == '*' && i + 1 < glob.Length && glob[i + 1] == '*')
            {
                // "**/" = any number of leading directories (including none); a trailing "**" = anything.
                if (i + 2 < glob.Length && glob[i + 2] == '/') { regex.Append("(?:.*/)?"); i += 2; }
                else { regex.Append(".*"); i += 1; }
            }
            else if (c == '*') regex.Append("[^/]*");
            else if (c == '?') regex.Append("[^/]");
            else regex.Append(Regex.Escape(c.ToString()));
        }
        return regex.ToString();
    }
}
