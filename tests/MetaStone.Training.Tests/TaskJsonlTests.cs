using MetaStone.Training.Tasks;

namespace MetaStone.Training.Tests;

public sealed class TaskJsonlTests
{
    [Fact]
    public void Export_then_import_round_trips_prompt_answer_and_id()
    {
        var problems = new ArithmeticChainTask().Generate(TaskSplits.Dev, 100, seed: 4).ToList();
        var directory = TestPaths.NewTempDirectory("jsonl");
        try
        {
            var path = Path.Combine(directory, "nested", "dev.jsonl");
            TaskJsonl.WriteFile(path, problems);
            var examples = TaskJsonl.ReadFile(path);

            Assert.Equal(problems.Count, examples.Count);
            for (var i = 0; i < problems.Count; i++)
            {
                Assert.Equal(problems[i].Prompt, examples[i].Prompt);
                Assert.Equal(problems[i].AnswerText, examples[i].Answer);
                Assert.Equal(problems[i].Id, examples[i].Id);
            }
            Assert.Equal(100, File.ReadAllLines(path).Length);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public void Lines_have_the_reference_shape_with_a_string_answer()
    {
        var problem = ArithmeticChainTask.CreateProblem("dev-0-000000", 47, [new('-', 385), new('*', 3)]);
        var writer = new StringWriter();
        TaskJsonl.Write(writer, [problem]);
        Assert.Equal(
            "{\"id\":\"dev-0-000000\",\"prompt\":\"Compute 47 - 385 * 3 from left to right.\",\"answer\":\"-1014\"}\n",
            writer.ToString());
    }

    [Fact]
    public void Import_ignores_extra_fields_blank_lines_and_accepts_numeric_answers()
    {
        const string text = "{\"prompt\":\"p1\",\"answer\":\"12\",\"level\":3,\"meta\":{\"a\":[1]}}\n\n   \n{\"answer\":-5,\"prompt\":\"p2\"}\n";
        var examples = TaskJsonl.Read(new StringReader(text));
        Assert.Equal([new TaskExample("p1", "12"), new TaskExample("p2", "-5")], examples);
    }

    [Theory]
    [InlineData("{\"prompt\":\"p\",\"answer\":\"1\"", "invalid JSON")]
    [InlineData("[1,2]", "expected a JSON object")]
    [InlineData("{\"answer\":\"1\"}", "\"prompt\"")]
    [InlineData("{\"prompt\":3,\"answer\":\"1\"}", "\"prompt\"")]
    [InlineData("{\"prompt\":\"p\"}", "\"answer\"")]
    [InlineData("{\"prompt\":\"p\",\"answer\":null}", "\"answer\"")]
    public void Malformed_line_error_names_the_source_and_line_number(string badLine, string reason)
    {
        var text = "{\"prompt\":\"ok\",\"answer\":\"1\"}\n\n" + badLine + "\n";
        var error = Assert.Throws<FormatException>(() => TaskJsonl.Read(new StringReader(text), "dev.jsonl"));
        Assert.StartsWith("dev.jsonl line 3:", error.Message);
        Assert.Contains(reason, error.Message);
    }

    [Fact]
    public void Export_split_writes_the_generated_problems()
    {
        var directory = TestPaths.NewTempDirectory("jsonl");
        try
        {
            var task = new ArithmeticChainTask();
            var path = Path.Combine(directory, "test.jsonl");
            TaskJsonl.ExportSplit(task, TaskSplits.Test, 25, seed: 3, path);
            var imported = TaskJsonl.ReadFile(path);
            var expected = task.Generate(TaskSplits.Test, 25, seed: 3).Select(p => new TaskExample(p.Prompt, p.AnswerText, p.Id));
            Assert.Equal(expected, imported);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
