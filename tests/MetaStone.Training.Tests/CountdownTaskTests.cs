using MetaStone.Reasoning;
using MetaStone.Training.Tasks;
using MetaStone.Training.Trainers;
using Xunit;
using Xunit.Abstractions;

namespace MetaStone.Training.Tests;

public sealed class CountdownTaskTests(ITestOutputHelper output)
{
    private static readonly CountdownTask Task = new();

    [Fact]
    public void Generation_is_deterministic_solvable_and_split_pure()
    {
        var a = Task.Generate(TaskSplits.Test, 200, seed: 3).ToList();
        var b = Task.Generate(TaskSplits.Test, 200, seed: 3).ToList();
        Assert.Equal(a.Select(p => p.Prompt), b.Select(p => p.Prompt));
        Assert.Equal(200, a.Select(p => p.Canonical).Distinct().Count());
        var train = Task.Generate(TaskSplits.Train, 2000, seed: 3).Select(p => p.Canonical).ToHashSet();
        Assert.DoesNotContain(a, p => train.Contains(p.Canonical));
        foreach (var p in a)
        {
            Assert.Equal(p.Target, CountdownTask.TryParsePrompt(p.Id, p.Prompt)!.Target);
            Assert.Equal(p.Numbers, CountdownTask.TryParsePrompt(p.Id, p.Prompt)!.Numbers);
            Assert.InRange(p.Target, 10, 99);
        }
    }

    [Fact]
    public void Reference_traces_are_honest_searches_and_grade_as_their_ending_says()
    {
        var problems = Task.Generate(TaskSplits.Train, 400, seed: 9).ToList();
        int solved = 0;
        foreach (var p in problems)
        {
            string solution = Task.Solution(p, traceSeed: 5);
            Assert.Equal(solution, Task.Solution(p, traceSeed: 5));
            var think = solution[..solution.IndexOf("</think>", StringComparison.Ordinal)];
            var steps = think.Split(".\n\n")[..^1];
            bool gaveUp = steps[^1] == "Out of attempts";
            if (gaveUp) steps = steps[..^1];
            Assert.InRange(steps.Length, 1, Task.Options.MaxAttempts);
            Assert.Equal(steps.Length, steps.Distinct().Count());
            // Every attempt is true arithmetic on the given numbers; only the last may succeed, and the answer says so.
            for (int i = 0; i < steps.Length; i++)
            {
                bool succeeds = OracleProbe.SearchStepSucceeds(steps[i], p.Spec);
                Assert.Equal(steps[i].EndsWith(", yes", StringComparison.Ordinal), succeeds);
                if (i < steps.Length - 1) Assert.False(succeeds, steps[i]);
            }
            bool correct = AnswerGrader.IsCorrect(solution, p.Spec.ToString());
            Assert.Equal(OracleProbe.SearchStepSucceeds(steps[^1], p.Spec), correct);
            if (!correct)
            {
                Assert.EndsWith(@"\boxed{none}", solution);
                Assert.True(gaveUp);
                Assert.Equal(Task.Options.MaxAttempts, steps.Length);
            }
            else solved++;
        }
        output.WriteLine($"reference solves {solved} of {problems.Count}");
        output.WriteLine(TaskChatFormat.GenerationPrompt(problems[0].Prompt) + Task.Solution(problems[0], 5));
        output.WriteLine(TaskChatFormat.GenerationPrompt(problems[1].Prompt) + Task.Solution(problems[1], 5));
        // The search budget is what makes the family a search: the reference finds a solution on part of the problems only.
        Assert.InRange(solved / (double)problems.Count, 0.15, 0.6);
    }

    [Fact]
    public void Step_format_checks_the_result_against_the_target_in_the_open()
    {
        var ops = new List<CountdownTask.Operation> { new(9, '*', 7, 63), new(63, '+', 3, 66), new(66, '+', 2, 68) };
        Assert.Equal("9 * 7 = 63, + 3 = 66, + 2 = 68 vs 68, yes.\n\n", CountdownTask.FormatAttempt(ops, 68));
        Assert.Equal("9 * 7 = 63, + 3 = 66, + 2 = 68 vs 78, no.\n\n", CountdownTask.FormatAttempt(ops, 78));
        var spec = new CountdownSpec(68, [2, 3, 7, 9]);
        Assert.True(OracleProbe.SearchStepSucceeds("9 * 7 = 63, + 3 = 66, + 2 = 68 vs 68, yes", spec));
        // The oracle checks the arithmetic and the numbers, not the attempt's own verdict.
        Assert.True(OracleProbe.SearchStepSucceeds("9 * 7 = 63, + 3 = 66, + 2 = 68 vs 68, no", spec));
        Assert.False(OracleProbe.SearchStepSucceeds("9 * 7 = 63, + 3 = 66, + 2 = 69 vs 68, yes", spec));
        Assert.False(OracleProbe.SearchStepSucceeds("9 * 7 = 63, + 7 = 70, - 2 = 68 vs 68, yes", spec));
        Assert.False(OracleProbe.SearchStepSucceeds("Out of attempts", spec));
        Assert.Equal("((9 * 7) + 3) + 2", CountdownTask.FormatExpression(ops));
        Assert.True(CountdownGrader.IsCorrect(CountdownTask.FormatExpression(ops), new CountdownSpec(68, [2, 3, 7, 9])));
    }

    [Fact]
    public void Suite_mixes_families_by_fraction_and_keeps_the_chain_test_split()
    {
        var suite = new TaskSuite();
        var mixed = suite.Generate(TaskSplits.Train, 100, seed: 1);
        Assert.Equal(50, mixed.Count(p => p.Family == TaskFamily.Search));
        Assert.All(mixed, p => Assert.Equal(p.Family, TaskSuite.FamilyOfPrompt(p.Prompt)));
        var chainOnly = suite.Generate(TaskSplits.Test, 20, seed: 1, TaskFamily.Chain);
        Assert.Equal(new ArithmeticChainTask().Generate(TaskSplits.Test, 20, 1).Select(p => p.Prompt), chainOnly.Select(p => p.Prompt));
        Assert.Null(TaskSuite.FamilyOfPrompt("What is the capital of France?"));
    }
}
