using MetaStone.Reasoning;

namespace MetaStone.Reasoning.Tests;

public sealed class AnswerGraderTests
{
    [Fact]
    public void ExtractBoxed_returns_null_without_a_box()
    {
        Assert.Null(AnswerGrader.ExtractBoxed("The answer is 42."));
        Assert.Null(AnswerGrader.ExtractBoxed(""));
    }

    [Fact]
    public void ExtractBoxed_takes_the_last_box()
    {
        Assert.Equal("7", AnswerGrader.ExtractBoxed(@"first \boxed{3}, then \boxed{5}, finally \boxed{7}."));
    }

    [Fact]
    public void ExtractBoxed_keeps_nested_braces()
    {
        Assert.Equal(@"\frac{1}{2}", AnswerGrader.ExtractBoxed(@"so \boxed{\frac{1}{2}} done"));
        Assert.Equal("{a}", AnswerGrader.ExtractBoxed(@"\boxed{{a}}"));
    }

    [Fact]
    public void ExtractBoxed_returns_empty_for_an_empty_box()
    {
        Assert.Equal("", AnswerGrader.ExtractBoxed(@"\boxed{}"));
    }

    [Fact]
    public void ExtractBoxed_skips_a_truncated_last_box()
    {
        Assert.Equal("12", AnswerGrader.ExtractBoxed(@"\boxed{12} and then \boxed{13"));
        Assert.Null(AnswerGrader.ExtractBoxed(@"\boxed{\frac{1}{2}"));
    }

    [Theory]
    [InlineData(@"\boxed{42}", "42")]
    [InlineData(@"\boxed{ 42 }", "42")]
    [InlineData(@"\boxed{4 2}", "42")]
    [InlineData(@"\boxed{-42}", "-42")]
    [InlineData("\\boxed{\u221242}", "-42")]
    [InlineData(@"\boxed{-42}", "\u221242")]
    [InlineData(@"\boxed{- 42}", "-42")]
    [InlineData(@"\boxed{1,234}", "1234")]
    [InlineData(@"\boxed{-1,234,567}", "-1234567")]
    [InlineData(@"\boxed{+17}", "17")]
    [InlineData(@"\boxed{-0}", "0")]
    [InlineData(@"\boxed{042}", "42")]
    [InlineData(@"\boxed{1209}", " 1209\n")]
    [InlineData(@"\boxed{x+1}", "x + 1")]
    public void IsCorrect_accepts_equivalent_answers(string output, string expected)
    {
        Assert.True(AnswerGrader.IsCorrect(output, expected));
    }

    [Theory]
    [InlineData(@"\boxed{41}", "42")]
    [InlineData(@"\boxed{42}", "-42")]
    [InlineData(@"\boxed{}", "0")]
    [InlineData("no box at all 42", "42")]
    [InlineData(@"\boxed{1,2}", "12")]
    [InlineData(@"\boxed{42} but actually \boxed{43}", "42")]
    public void IsCorrect_rejects_wrong_or_missing_answers(string output, string expected)
    {
        Assert.False(AnswerGrader.IsCorrect(output, expected));
    }

    [Fact]
    public void IsCorrect_grades_only_the_text_after_the_last_think_close()
    {
        const string boxOnlyInThinking = "<think>\nmaybe \\boxed{42}.\n\n</think>\n\nThe answer is 42.";
        Assert.False(AnswerGrader.IsCorrect(boxOnlyInThinking, "42"));

        const string thinkingDraftDiffers = "<think>\n\\boxed{41}.\n\n</think>\n\n\\boxed{42}";
        Assert.True(AnswerGrader.IsCorrect(thinkingDraftDiffers, "42"));

        const string twoThinkBlocks = "<think>a</think>\\boxed{1}<think>b</think>\\boxed{2}";
        Assert.True(AnswerGrader.IsCorrect(twoThinkBlocks, "2"));
        Assert.False(AnswerGrader.IsCorrect(twoThinkBlocks, "1"));
    }

    [Fact]
    public void IsCorrect_uses_the_whole_text_when_there_is_no_think_close()
    {
        Assert.True(AnswerGrader.IsCorrect("<think>\n47 + 3 = 50.\n\n\\boxed{50}", "50"));
    }

    [Fact]
    public void Normalize_keeps_non_numeric_text_comparable()
    {
        Assert.Equal("-1234", AnswerGrader.Normalize(" \u22121,234 "));
        Assert.Equal("1,2", AnswerGrader.Normalize("1, 2"));
        Assert.Equal("5", AnswerGrader.Normalize("+5"));
    }
}
