using MetaStone.Cli;

namespace MetaStone.Cli.Tests;

/// <summary>Issue 11: parse errors are bad input (exit code 2) in our words, without .NET type names or the whole help text.</summary>
public sealed class CliParseErrorTests
{
    private static async Task<(int Code, string Error)> RunAsync(params string[] args)
    {
        using var error = new StringWriter();
        using var output = new StringWriter();
        int code = await CliRootCommand.RunAsync(args, new System.CommandLine.InvocationConfiguration { Output = output, Error = error }, error);
        return (code, error.ToString());
    }

    [Fact]
    public async Task A_value_of_the_wrong_type_is_one_clear_line_and_exit_code_2()
    {
        var (code, error) = await RunAsync("ask", "hi", "--k", "abc");
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Contains("error: Cannot parse argument 'abc' for option '--k' as an integer.", error);
        Assert.Contains("see: metastone ask --help", error);
        Assert.DoesNotContain("System.", error);
        Assert.DoesNotContain("Nullable", error);
    }

    [Fact]
    public async Task An_unknown_option_is_bad_input()
    {
        var (code, error) = await RunAsync("eval", "--problemz", "3");
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Contains("'--problemz'", error);
    }

    [Theory]
    [InlineData("Cannot parse argument 'x' for option '--t' as expected type 'System.Double'.", "Cannot parse argument 'x' for option '--t' as a number.")]
    [InlineData("k must be positive (Parameter 'k')", "k must be positive")]
    public void Messages_lose_their_dotnet_internals(string raw, string clean) => Assert.Equal(clean, CliRootCommand.CleanMessage(raw));
}
