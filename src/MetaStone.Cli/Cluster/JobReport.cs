using System.Globalization;
using MetaStone.Contracts;

namespace MetaStone.Cli.Cluster;

/// <summary>Human-readable output of jobs: live progress lines and the final answer with its candidate table.</summary>
public static class JobReport
{
    public static string ProgressLine(ProgressEvent e) => e.Kind switch
    {
        ProgressKind.Accepted => $"accepted: {e.K} candidates",
        ProgressKind.CandidateStarted => $"[{e.Finished,3}/{e.K}] candidate {e.CandidateIndex} started",
        ProgressKind.CandidateFinished => $"[{e.Finished,3}/{e.K}] candidate {e.CandidateIndex} finished  score {F(e.Score)}  on {e.Replica}   best so far: #{e.BestIndex} {F(e.BestScore)}",
        ProgressKind.Completed => $"done: winner #{e.BestIndex} score {F(e.BestScore)}",
        ProgressKind.Failed => $"failed: {e.Message}",
        ProgressKind.Cancelled => $"cancelled: {e.Message}",
        _ => e.Kind.ToString(),
    };

    public static void WriteResult(TextWriter output, JobResult result)
    {
        var winner = result.Winner;
        output.WriteLine($"answer: {winner.Answer ?? "(no boxed answer)"}");
        output.WriteLine($"score:  {F(winner.Score)}  (candidate #{winner.Index} of {result.K}, selection {result.Selection.Name()}, {result.ElapsedSeconds:F2} s)");
        output.WriteLine();
        output.WriteLine("   #        seed   score  steps  tokens  finish    answer          replica");
        foreach (var c in result.Candidates)
        {
            string mark = c.Index == result.WinnerIndex ? "*" : " ";
            string answer = c.Answer is null ? "-" : c.Answer.Length > 14 ? c.Answer[..13] + "…" : c.Answer;
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{mark}{c.Index,3} {c.Seed,11} {c.Score,7:F4} {c.StepScores.Length,6} {c.ResponseTokens,7}  {c.FinishReason.Name(),-8}  {answer,-14}  {c.Replica}"));
        }
        output.WriteLine();
        output.WriteLine("winner's text:");
        output.WriteLine(winner.Text);
    }

    public static void WriteStatus(TextWriter output, JobStatus status)
    {
        output.WriteLine($"job {status.JobId}: {status.State.ToString().ToLowerInvariant()}, {status.Finished}/{status.K} candidates finished" +
            (status.BestIndex is int b ? $", best #{b} {F(status.BestScore)}" : "") +
            (status.Error is null ? "" : $" ({status.Error})") +
            (status.CoordinatorSilo is null ? "" : $", coordinator on {status.CoordinatorSilo}"));
    }

    private static string F(double? score) => score is double s ? s.ToString("F4", CultureInfo.InvariantCulture) : "-";
}
