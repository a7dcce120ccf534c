using MetaStone.Training.Trainers;

namespace MetaStone.Cli.Training;

/// <summary>A one-line progress bar on stderr (redrawn in place on a terminal, one line per ~5% otherwise).</summary>
internal sealed class ProgressLine
{
    private readonly TextWriter _out = Console.Error;
    private readonly bool _interactive = !Console.IsErrorRedirected;
    private string _phase = "";
    private int _lastPercentPrinted = -1;
    private DateTime _lastDraw = DateTime.MinValue;

    public void Report(TrainingProgress p)
    {
        bool last = p.Step >= p.TotalSteps;
        if (p.Phase != _phase) { End(); _phase = p.Phase; _lastPercentPrinted = -1; }
        int percent = (int)(100.0 * p.Step / Math.Max(1, p.TotalSteps));
        var now = DateTime.UtcNow;
        if (_interactive ? (now - _lastDraw).TotalMilliseconds < 200 && !last : percent / 5 == _lastPercentPrinted / 5 && !last && p.Extra is null) return;
        _lastDraw = now;
        _lastPercentPrinted = percent;
        const int width = 24;
        int filled = width * percent / 100;
        string bar = new string('█', filled) + new string('░', width - filled);
        double rate = p.Elapsed.TotalSeconds > 0 ? p.Step / p.Elapsed.TotalSeconds : 0;
        string eta = rate > 0 && !last ? $" eta {TimeSpan.FromSeconds((p.TotalSteps - p.Step) / rate):mm\\:ss}" : "";
        string metrics = p.Phase switch
        {
            "policy" => $"loss {p.Loss:F4}  {p.TokensPerSecond / 1000:F1}k tok/s  lr {p.LearningRate:E1}",
            "sprm" => p.Extra ?? $"loss {p.Loss:F4}",
            _ => p.Extra ?? "",
        };
        string line = $"[{p.Phase,-8}] {bar} {p.Step}/{p.TotalSteps}  {metrics}  {p.Elapsed:mm\\:ss}{eta}";
        if (_interactive) _out.Write("\r" + line.PadRight(Math.Max(line.Length, 100)));
        else _out.WriteLine(line);
        if (last) End();
    }

    public void End()
    {
        if (_interactive && _phase != "") _out.WriteLine();
        _phase = "";
    }
}
