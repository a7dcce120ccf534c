using MetaStone.Reasoning;
using Xunit;

namespace MetaStone.Reasoning.Tests;

public sealed class CountdownGraderTests
{
    private static readonly CountdownSpec Spec = new(78, [3, 7, 25, 50]);

    [Theory]
    [InlineData("50 + 25 + 3")]
    [InlineData("(50 + 25) + 3")]
    [InlineData("((50 + 25) + 3)")]
    [InlineData("3 + 25 + 50")]
    [InlineData("  50+25+3 ")]
    [InlineData("7 * 3 + 50 + 7")]
    public void Accepts_expressions_that_reach_the_target_with_the_given_numbers(string expression) =>
        Assert.Equal(CountdownVerdict.Correct, CountdownGrader.Check(expression, new CountdownSpec(78, [3, 7, 25, 50, 7])));

    [Theory]
    [InlineData("50 + 25 + 7", CountdownVerdict.WrongValue)]          // 82, not 78
    [InlineData("(50 - 25) * 3 + 3", CountdownVerdict.NumberNotAvailable)] // 3 used twice
    [InlineData("50 + 28", CountdownVerdict.NumberNotAvailable)]      // 28 is not given
    [InlineData("50 + 25 + 3 + 0", CountdownVerdict.NumberNotAvailable)]
    [InlineData("50 / 3 * 3 + 25 + 3", CountdownVerdict.InexactDivision)] // 50 / 3 leaves a remainder
    [InlineData("50 / (7 - 7)", CountdownVerdict.InexactDivision)]
    [InlineData("50 + 25 +", CountdownVerdict.Malformed)]
    [InlineData("(50 + 25 + 3", CountdownVerdict.Malformed)]
    [InlineData("50 + 25 + 3)", CountdownVerdict.Malformed)]
    [InlineData("-3 + 50 + 25", CountdownVerdict.Malformed)]          // no unary minus: it would create a number
    [InlineData("none", CountdownVerdict.Malformed)]
    [InlineData("", CountdownVerdict.Malformed)]
    [InlineData("78", CountdownVerdict.NumberNotAvailable)]
    [InlineData("99999999999999999999 - 1", CountdownVerdict.Malformed)]
    public void Rejects_with_the_reason(string expression, CountdownVerdict expected) =>
        Assert.Equal(expected, CountdownGrader.Check(expression, Spec));

    [Fact]
    public void Precedence_is_the_usual_one_and_repeated_numbers_count_as_often_as_given()
    {
        // 3 + 25 * 3 = 78 with precedence; (3 + 25) * 3 = 84 would be wrong.
        var spec = new CountdownSpec(78, [3, 3, 25]);
        Assert.True(CountdownGrader.IsCorrect("3 + 25 * 3", spec));
        Assert.Equal(CountdownVerdict.WrongValue, CountdownGrader.Check("(3 + 25) * 3", spec));
        Assert.True(CountdownGrader.IsCorrect("25 × 3 + 3", spec));
        Assert.True(CountdownGrader.IsCorrect("(75 ÷ 25) * 25 + 3", new CountdownSpec(78, [75, 25, 25, 3])));
        Assert.Equal(CountdownVerdict.NumberNotAvailable, CountdownGrader.Check("3 + 3 + 3 * 25", spec));
    }

    [Fact]
    public void The_spec_round_trips_and_drives_AnswerGrader()
    {
        Assert.Equal("countdown:78:3,7,25,50", Spec.ToString());
        var parsed = CountdownSpec.TryParse(Spec.ToString())!;
        Assert.Equal(78, parsed.Target);
        Assert.Equal(new long[] { 3, 7, 25, 50 }, parsed.Numbers);
        Assert.Null(CountdownSpec.TryParse("78"));
        Assert.Null(CountdownSpec.TryParse("countdown:x:1,2"));
        Assert.Null(CountdownSpec.TryParse("countdown:78:"));

        Assert.True(AnswerGrader.IsCorrect("50 + 25 = 75, 75 + 3 = 78.\n\n</think>\n\n\\boxed{(50 + 25) + 3}", Spec.ToString()));
        Assert.False(AnswerGrader.IsCorrect("</think>\n\n\\boxed{none}", Spec.ToString()));
        // A box written while thinking is a draft, not the answer.
        Assert.False(AnswerGrader.IsCorrect("\\boxed{50 + 25 + 3}</think>\n\nno idea", Spec.ToString()));
        // Plain numeric answers still compare as numbers.
        Assert.True(AnswerGrader.IsCorrect("</think>\\boxed{078}", "78"));
    }
}
