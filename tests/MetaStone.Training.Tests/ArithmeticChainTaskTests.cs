using MetaStone.Reasoning;
using MetaStone.Training.Tasks;

namespace MetaStone.Training.Tests;

public sealed class ArithmeticChainTaskTests
{
    private static readonly ArithmeticChainTask Generator = new();

    [Fact]
    public void Same_seed_gives_the_same_problems()
    {
        var first = Generator.Generate(TaskSplits.Train, 200, seed: 7).ToList();
        var second = Generator.Generate(TaskSplits.Train, 200, seed: 7).ToList();
        Assert.Equal(first.Select(Describe), second.Select(Describe));
    }

    [Fact]
    public void Different_seeds_give_different_problems()
    {
        var first = Generator.Generate(TaskSplits.Train, 50, seed: 1).Select(p => p.Expression);
        var second = Generator.Generate(TaskSplits.Train, 50, seed: 2).Select(p => p.Expression);
        Assert.NotEqual(first, second);
    }

    [Fact]
    public void Splits_are_disjoint_and_each_problem_belongs_to_its_split()
    {
        // Different seeds per split on purpose: disjointness must not rely on sharing a seed.
        var train = Generator.Generate(TaskSplits.Train, 4000, seed: 11).Select(p => p.Expression).ToHashSet();
        var dev = Generator.Generate(TaskSplits.Dev, 2000, seed: 12).Select(p => p.Expression).ToHashSet();
        var test = Generator.Generate(TaskSplits.Test, 2000, seed: 11).Select(p => p.Expression).ToHashSet();

        Assert.Equal(4000, train.Count);
        Assert.Equal(2000, dev.Count);
        Assert.Equal(2000, test.Count);
        Assert.Empty(train.Intersect(dev));
        Assert.Empty(train.Intersect(test));
        Assert.Empty(dev.Intersect(test));
        Assert.All(train, e => Assert.Equal(TaskSplits.Train, TaskSplits.SplitOf(e)));
        Assert.All(dev, e => Assert.Equal(TaskSplits.Dev, TaskSplits.SplitOf(e)));
        Assert.All(test, e => Assert.Equal(TaskSplits.Test, TaskSplits.SplitOf(e)));
    }

    [Fact]
    public void Unknown_split_is_rejected()
    {
        Assert.Throws<ArgumentException>(() => Generator.Generate("validation", 1, 0));
    }

    [Fact]
    public void Answers_are_the_left_to_right_value_and_respect_the_bounds()
    {
        var options = Generator.Options;
        var opCounts = new HashSet<int>();
        foreach (var problem in Generator.Generate(TaskSplits.Train, 3000, seed: 3))
        {
            opCounts.Add(problem.Ops.Count);
            Assert.InRange(problem.Ops.Count, options.MinOps, options.MaxOps);
            Assert.InRange(problem.Start, options.MinOperand, options.MaxOperand);
            long value = problem.Start;
            foreach (var (op, operand) in problem.Ops)
            {
                value = op switch
                {
                    '+' => value + operand,
                    '-' => value - operand,
                    '*' => value * operand,
                    _ => throw new InvalidOperationException($"unexpected operator {op}"),
                };
                if (op == '*')
                    Assert.InRange(operand, options.MinMultiplier, options.MaxMultiplier);
                else
                    Assert.InRange(operand, options.MinOperand, options.MaxOperand);
                Assert.True(Math.Abs(value) < options.MaxAbsValue, $"{problem.Expression}: running value {value} out of range");
            }
            Assert.Equal(value, problem.Answer);
        }
        // Mixed difficulty: every chain length is represented.
        Assert.Equal(Enumerable.Range(options.MinOps, options.MaxOps - options.MinOps + 1), opCounts.Order());
    }

    [Fact]
    public void Prompt_states_left_to_right_and_the_expression()
    {
        var problem = ArithmeticChainTask.CreateProblem("x", 47, [new('+', 385), new('-', 29), new('*', 3)]);
        Assert.Equal("Compute 47 + 385 - 29 * 3 from left to right.", problem.Prompt);
        Assert.Equal("47 + 385 - 29 * 3", problem.Expression);
        Assert.Equal(1209, problem.Answer);
    }

    [Fact]
    public void Solution_has_the_documented_exact_text()
    {
        var problem = ArithmeticChainTask.CreateProblem("x", 47, [new('+', 385), new('-', 29), new('*', 3)]);
        Assert.Equal(
            "47 + 385 = 432.\n\n432 - 29 = 403.\n\n403 * 3 = 1209.\n\n</think>\n\n\\boxed{1209}",
            ArithmeticChainTask.Solution(problem));
    }

    [Fact]
    public void Solution_writes_negative_intermediate_values()
    {
        var problem = ArithmeticChainTask.CreateProblem("x", 47, [new('-', 385), new('*', 3)]);
        Assert.Equal(
            "47 - 385 = -338.\n\n-338 * 3 = -1014.\n\n</think>\n\n\\boxed{-1014}",
            ArithmeticChainTask.Solution(problem));
    }

    [Fact]
    public void Every_step_ends_with_the_step_token_and_the_grader_finds_the_answer()
    {
        foreach (var problem in Generator.Generate(TaskSplits.Dev, 500, seed: 5))
        {
            var solution = ArithmeticChainTask.Solution(problem);
            var thinkClose = solution.IndexOf("</think>", StringComparison.Ordinal);
            var thinking = solution[..thinkClose];
            var steps = thinking.Split(".\n\n");
            // Splitting on the step token leaves exactly one empty tail: nothing follows the last step.
            Assert.Equal(problem.Ops.Count + 1, steps.Length);
            Assert.Equal("", steps[^1]);
            Assert.All(steps[..^1], step => Assert.DoesNotContain('\n', step));
            Assert.Equal(ArithmeticChainTask.Steps(problem), steps[..^1].Select(s => s + ".\n\n"));

            Assert.True(AnswerGrader.IsCorrect(solution, problem.AnswerText));
            Assert.Equal(problem.AnswerText, AnswerGrader.ExtractBoxed(solution));
            Assert.False(AnswerGrader.IsCorrect(solution, (problem.Answer + 1).ToString(System.Globalization.CultureInfo.InvariantCulture)));
        }
    }

    [Fact]
    public void Prompt_parses_back_into_the_same_problem()
    {
        foreach (var problem in Generator.Generate(TaskSplits.Test, 200, seed: 9))
        {
            var parsed = ArithmeticChainTask.TryParsePrompt(problem.Id, problem.Prompt);
            Assert.NotNull(parsed);
            Assert.Equal(Describe(problem), Describe(parsed));
        }
        Assert.Null(ArithmeticChainTask.TryParsePrompt("x", "What is 2 + 2?"));
    }

    [Fact]
    public void Training_text_renders_the_chat_prompt_then_the_solution()
    {
        var problem = ArithmeticChainTask.CreateProblem("x", 12, [new('+', 30), new('*', 2)]);
        Assert.Equal(
            "<|im_start|>user\nCompute 12 + 30 * 2 from left to right.<|im_end|>\n<|im_start|>assistant\n<think>\n"
            + "12 + 30 = 42.\n\n42 * 2 = 84.\n\n</think>\n\n\\boxed{84}<|im_end|>",
            TaskChatFormat.TrainingText(problem));
    }

    private static string Describe(ArithmeticProblem p) =>
        $"{p.Id}|{p.Prompt}|{p.Start}|{string.Join(",", p.Ops)}|{p.Answer}";
}
