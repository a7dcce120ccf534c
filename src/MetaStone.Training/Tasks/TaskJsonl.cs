using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace MetaStone.Training.Tasks;

/// <summary>One evaluation record: the user prompt and the expected answer, as the reference scripts store them.</summary>
/// <param name="Id">Optional identifier (null when the line had none).</param>
public sealed record TaskExample(string Prompt, string Answer, string? Id = null);

/// <summary>
/// JSONL import/export in the <c>{"prompt": ..., "answer": "..."}</c> shape of the reference evaluation scripts
/// (answer as a string). Export adds an <c>"id"</c>; import reads <c>prompt</c>, <c>answer</c> and an optional
/// string <c>id</c>, and ignores every other field.
/// </summary>
public static class TaskJsonl
{
    // Relaxed escaping keeps '+', '<' and '>' readable in the files; the output is still valid JSON.
    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Writes one JSON object per line: <c>{"id":...,"prompt":...,"answer":"..."}</c>.</summary>
    public static void Write(TextWriter writer, IEnumerable<ArithmeticProblem> problems)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(problems);
        Write(writer, problems.Select(p => new TaskExample(p.Prompt, p.AnswerText, p.Id)));
    }

    /// <inheritdoc cref="Write(TextWriter, IEnumerable{ArithmeticProblem})"/>
    public static void Write(TextWriter writer, IEnumerable<TaskExample> examples)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(examples);
        var buffer = new MemoryStream();
        foreach (var example in examples)
        {
            buffer.SetLength(0);
            using (var json = new Utf8JsonWriter(buffer, WriterOptions))
            {
                json.WriteStartObject();
                if (example.Id is not null)
                    json.WriteString("id", example.Id);
                json.WriteString("prompt", example.Prompt);
                json.WriteString("answer", example.Answer);
                json.WriteEndObject();
            }
            writer.Write(Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length));
            writer.Write('\n');
        }
    }

    /// <summary>Writes problems to a UTF-8 (no BOM) JSONL file, creating its directory.</summary>
    public static void WriteFile(string path, IEnumerable<ArithmeticProblem> problems)
    {
        ArgumentNullException.ThrowIfNull(path);
        var directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (!string.IsNullOrEmpty(directory))
            Directory.CreateDirectory(directory);
        using var writer = new StreamWriter(path, append: false, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false));
        Write(writer, problems);
    }

    /// <summary>Generates <paramref name="count"/> problems of a split and writes them to <paramref name="path"/>.</summary>
    public static void ExportSplit(ArithmeticChainTask task, string split, int count, int seed, string path)
    {
        ArgumentNullException.ThrowIfNull(task);
        WriteFile(path, task.Generate(split, count, seed));
    }

    /// <summary>
    /// Reads JSONL records. Blank lines are skipped. A malformed line throws <see cref="FormatException"/> whose
    /// message names <paramref name="sourceName"/> and the 1-based line number.
    /// </summary>
    /// <remarks>A numeric <c>answer</c> is accepted and kept as its JSON text, since some exports write integers.</remarks>
    public static IReadOnlyList<TaskExample> Read(TextReader reader, string sourceName = "<jsonl>")
    {
        ArgumentNullException.ThrowIfNull(reader);
        var examples = new List<TaskExample>();
        var lineNumber = 0;
        while (reader.ReadLine() is { } line)
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line))
                continue;
            examples.Add(ParseLine(line, sourceName, lineNumber));
        }
        return examples;
    }

    /// <summary>Reads a JSONL file; errors name the file and line.</summary>
    public static IReadOnlyList<TaskExample> ReadFile(string path)
    {
        using var reader = new StreamReader(path, Encoding.UTF8);
        return Read(reader, path);
    }

    private static TaskExample ParseLine(string line, string sourceName, int lineNumber)
    {
        FormatException Error(string reason, Exception? inner = null) =>
            new($"{sourceName} line {lineNumber}: {reason}", inner);

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(line);
        }
        catch (JsonException e)
        {
            throw Error($"invalid JSON ({e.Message})", e);
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw Error($"expected a JSON object, got {root.ValueKind}");
            if (!root.TryGetProperty("prompt", out var prompt) || prompt.ValueKind != JsonValueKind.String)
                throw Error("missing string field \"prompt\"");
            if (!root.TryGetProperty("answer", out var answer))
                throw Error("missing field \"answer\"");
            var answerText = answer.ValueKind switch
            {
                JsonValueKind.String => answer.GetString()!,
                JsonValueKind.Number => answer.GetRawText(),
                _ => throw Error($"field \"answer\" must be a string or number, got {answer.ValueKind}"),
            };
            string? id = null;
            if (root.TryGetProperty("id", out var idElement) && idElement.ValueKind == JsonValueKind.String)
                id = idElement.GetString();
            return new TaskExample(prompt.GetString()!, answerText, id);
        }
    }
}
