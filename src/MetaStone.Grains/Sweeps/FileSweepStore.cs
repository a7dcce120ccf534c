using System.Text;
using MetaStone.Contracts;
using MetaStone.Grains.Jobs;

namespace MetaStone.Grains.Sweeps;

/// <summary>
/// Sweeps in files, for the embedded single-process mode: <c>{directory}/{id}/sweep.json</c> (request, model, state)
/// and <c>{id}/items.jsonl</c>, one finished item per line, appended and flushed as each item finishes. Running the
/// same sweep again in a new process finds its items and generates only the rest. A torn last line (the process died
/// mid-write) is ignored. Only sweeps this process touched count as running, so a new process never resumes old sweeps
/// on its own: re-running the sweep command does.
/// </summary>
public sealed class FileSweepStore(string directory) : ISweepStore
{
    private readonly object _gate = new();
    private readonly HashSet<string> _touched = [];

    private sealed record Header(SweepRequest Request, ModelInfo Model, SweepState State, string? Error, DateTimeOffset CreatedAt, int Runs);

    public string SweepDirectory(string sweepId)
    {
        if (string.IsNullOrWhiteSpace(sweepId) || sweepId.IndexOfAny([.. Path.GetInvalidFileNameChars(), '/', '\\']) >= 0 || sweepId is "." or "..")
            throw new ArgumentException($"sweep id '{sweepId}' cannot name a directory (use letters, digits, '-', '_', '.')");
        return Path.Combine(directory, sweepId);
    }

    private string HeaderPath(string id) => Path.Combine(SweepDirectory(id), "sweep.json");
    private string ItemsPath(string id) => Path.Combine(SweepDirectory(id), "items.jsonl");

    public Task<bool> CreateAsync(string sweepId, SweepRequest request, ModelInfo model, DateTimeOffset createdAt)
    {
        lock (_gate)
        {
            if (File.Exists(HeaderPath(sweepId))) return Task.FromResult(false);
            Directory.CreateDirectory(SweepDirectory(sweepId));
            WriteHeader(sweepId, new Header(request, model, SweepState.Running, null, createdAt, 0));
            File.WriteAllText(ItemsPath(sweepId), "");
            _touched.Add(sweepId);
            return Task.FromResult(true);
        }
    }

    public Task<StoredSweep?> LoadAsync(string sweepId)
    {
        lock (_gate)
        {
            if (!File.Exists(HeaderPath(sweepId))) return Task.FromResult<StoredSweep?>(null);
            var header = ReadHeader(sweepId);
            var items = new Dictionary<int, SweepItemResult>();
            if (File.Exists(ItemsPath(sweepId)))
                foreach (var line in File.ReadLines(ItemsPath(sweepId)))
                {
                    if (string.IsNullOrWhiteSpace(line)) continue;
                    try
                    {
                        var item = JobJson.Read<SweepItemResult>(line);
                        items[item.Item] = item;
                    }
                    catch (System.Text.Json.JsonException) { } // the last line of a process that died mid-write
                }
            _touched.Add(sweepId);
            return Task.FromResult<StoredSweep?>(new StoredSweep
            {
                SweepId = sweepId, Request = header.Request, Model = header.Model, State = header.State, Error = header.Error,
                CreatedAt = header.CreatedAt, Runs = header.Runs, Items = items,
            });
        }
    }

    public Task<int> StartRunAsync(string sweepId)
    {
        lock (_gate)
        {
            var stored = ReadHeader(sweepId);
            var header = stored with { Runs = stored.Runs + 1, State = SweepState.Running, Error = null };
            WriteHeader(sweepId, header);
            _touched.Add(sweepId);
            return Task.FromResult(header.Runs);
        }
    }

    public Task SaveItemAsync(string sweepId, SweepItemResult item)
    {
        lock (_gate)
        {
            // One line per item, flushed to disk before the item counts as finished.
            using var stream = new FileStream(ItemsPath(sweepId), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read);
            // A torn line from an earlier crash must not swallow this one: start on a fresh line.
            if (stream.Length > 0)
            {
                stream.Seek(-1, SeekOrigin.End);
                if (stream.ReadByte() != '\n') stream.WriteByte((byte)'\n');
            }
            stream.Seek(0, SeekOrigin.End);
            byte[] line = Encoding.UTF8.GetBytes(JobJson.Write(item) + "\n");
            stream.Write(line);
            stream.Flush(flushToDisk: true);
        }
        return Task.CompletedTask;
    }

    public Task EndAsync(string sweepId, SweepState state, string? error)
    {
        lock (_gate) WriteHeader(sweepId, ReadHeader(sweepId) with { State = state, Error = error });
        return Task.CompletedTask;
    }

    public Task<IReadOnlyList<string>> RunningSweepsAsync()
    {
        lock (_gate)
            return Task.FromResult<IReadOnlyList<string>>(_touched.Where(id => File.Exists(HeaderPath(id)) && ReadHeader(id).State == SweepState.Running).ToList());
    }

    // One process owns these files while it runs: its sweep grain's lease never lapses.
    public Task RenewLeaseAsync(string sweepId, string owner, TimeSpan ttl) => Task.CompletedTask;
    public Task<bool> HasLeaseAsync(string sweepId) => Task.FromResult(true);

    private Header ReadHeader(string id) => JobJson.Read<Header>(File.ReadAllText(HeaderPath(id)));

    private void WriteHeader(string id, Header header)
    {
        // Write-then-rename: a crash leaves the old header or the new one, never half of one.
        string temp = HeaderPath(id) + ".tmp";
        File.WriteAllText(temp, JobJson.Write(header));
        File.Move(temp, HeaderPath(id), overwrite: true);
    }
}
