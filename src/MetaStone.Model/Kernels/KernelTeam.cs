using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MetaStone.Model.Kernels;

/// <summary>Work <see cref="KernelTeam"/> splits into parts: a matmul (<see cref="LinearJob"/>) or the sampler's rows.</summary>
internal unsafe interface ITeamJob
{
    /// <summary>Parts worth running with <paramref name="threads"/> threads: 1 when the job is too small for waking a
    /// worker to pay.</summary>
    int PartsFor(int threads);

    /// <summary>Floats of per-thread scratch a part needs.</summary>
    int ScratchFloats { get; }

    /// <summary>Runs part <paramref name="part"/> of <paramref name="parts"/>; must not throw (a worker has no caller).</summary>
    void RunPart(int part, int parts, float* scratch);
}

/// <summary>
/// The threads that run <see cref="HostLinear"/>'s parts: the calling thread plus up to <c>ProcessorCount − 1</c>
/// background workers, each with its own scratch.
/// </summary>
/// <remarks>
/// Hand-written rather than <c>Parallel.For</c>: a decode step makes ~100 matmul calls of 0.1–2 ms each, and the thread
/// pool's dispatch, its closures and its hill-climbing added tens of microseconds per call and allocated on every step;
/// here a call is a few writes, a wake-up and claims on one counter. Workers spin briefly after a part (the next matmul of
/// the step comes within microseconds) and then sleep on a semaphore, so an idle engine takes no CPU.
/// One matmul runs at a time; a second caller (another engine in the process) runs its matmul on its own thread
/// instead of queueing behind the first.
/// </remarks>
internal sealed unsafe class KernelTeam
{
    public static KernelTeam Shared { get; } = new(Math.Max(1, Environment.ProcessorCount));

    /// <summary>How long a worker keeps polling for the next part before it sleeps (a decode step's matmuls are
    /// separated by a few torch calls, 10–200 µs).</summary>
    private static readonly TimeSpan SpinBeforeSleep = TimeSpan.FromMicroseconds(50);

    /// <summary>Below this a matmul runs on the calling thread only.</summary>
    private const long SmallJobMultiplyAdds = 256 * 1024;

    private readonly int _capacity;
    private readonly Worker?[] _workers;
    private readonly Lock _gate = new();
    // The job being run: a pointer to the caller's job (on its stack; the caller waits for every claimed part) and the
    // part runner of its type, so any ITeamJob runs without boxing or a delegate allocation per call.
    private void* _job;
    private delegate*<void*, int, int, float*, void> _runPart;
    private int _scratchFloats;
    private int _parts;
    // Parts not yet claimed, counted down: a claim is a decrement whose result is ≥ 0 and names the part. Claims, not
    // assignments: the caller runs every part no worker has taken, so a worker the scheduler has not run yet (several
    // silo processes on 2 cores) never holds up a step; the caller only waits for parts already running elsewhere.
    // A late worker's decrement after the last claim goes below zero and claims nothing; the next job overwrites it.
    private int _unclaimed;
    // Parts claimed and not yet finished, plus parts not yet claimed: the caller returns when it reaches zero.
    private int _unfinished;

    [ThreadStatic] private static Scratch? t_callerScratch;

    private KernelTeam(int capacity)
    {
        _capacity = capacity;
        _workers = new Worker?[capacity];
    }

    /// <summary>Runs <paramref name="job"/>'s parts on up to <paramref name="threads"/> threads and returns when all are
    /// done. The job must be a local of the caller (the workers read it through a pointer to the caller's stack).</summary>
    public void Run<TJob>(ref TJob job, int threads) where TJob : unmanaged, ITeamJob
    {
        int parts = Math.Clamp(job.PartsFor(threads), 1, _capacity);
        t_callerScratch ??= new Scratch();
        float* callerScratch = t_callerScratch.For(job.ScratchFloats);
        if (parts == 1 || !_gate.TryEnter())
        {
            job.RunPart(0, 1, callerScratch);
            return;
        }
        try
        {
            _job = Unsafe.AsPointer(ref job);
            _runPart = &RunPartOf<TJob>;
            _scratchFloats = job.ScratchFloats;
            _parts = parts;
            Volatile.Write(ref _unfinished, parts);
            // Published last: a worker's claim that sees this count also sees the fields above.
            Volatile.Write(ref _unclaimed, parts);
            for (int p = 1; p < parts; p++) (_workers[p] ??= new Worker(this, p)).Signal();
            int part;
            while ((part = Interlocked.Decrement(ref _unclaimed)) >= 0)
            {
                try
                {
                    job.RunPart(part, parts, callerScratch);
                }
                finally
                {
                    Interlocked.Decrement(ref _unfinished);   // also when the part threw: it is over
                }
            }
        }
        finally
        {
            // Also when this thread's part threw: withdraw the parts nobody claimed, then wait for the ones running on
            // workers, which read the job on this thread's stack until they are done.
            int withdrawn = Interlocked.Exchange(ref _unclaimed, -1);
            if (withdrawn > 0) Interlocked.Add(ref _unfinished, -withdrawn);
            var spin = new SpinWait();
            while (Volatile.Read(ref _unfinished) != 0) spin.SpinOnce(sleep1Threshold: -1);
            _gate.Exit();
        }
    }

    /// <summary>Claims and runs parts of the current job until none is left; a worker's side of <see cref="Run"/>.</summary>
    private void RunClaimedParts(Scratch scratch)
    {
        int part;
        while ((part = Interlocked.Decrement(ref _unclaimed)) >= 0)
        {
            // Read after the claim: the job cannot finish (nor the next one be published) before this part does.
            _runPart(_job, part, _parts, scratch.For(_scratchFloats));
            Interlocked.Decrement(ref _unfinished);
        }
    }

    private static void RunPartOf<TJob>(void* job, int part, int parts, float* scratch) where TJob : unmanaged, ITeamJob =>
        ((TJob*)job)->RunPart(part, parts, scratch);

    /// <summary>Below this a matmul runs on the calling thread only: a small one (the tiny model's, ~100k multiply-adds)
    /// finishes before a sleeping worker wakes.</summary>
    internal static bool IsSmallMatmul(long multiplyAdds) => multiplyAdds < SmallJobMultiplyAdds;

    private sealed class Worker
    {
        private readonly KernelTeam _team;
        private readonly SemaphoreSlim _wake = new(0);
        private readonly Scratch _scratch = new();
        private int _generation;     // bumped by Signal
        private int _sleeping;       // 1 while the worker waits (or is about to) on _wake

        public Worker(KernelTeam team, int part)
        {
            _team = team;
            new Thread(Loop) { IsBackground = true, Name = $"metastone-kernel-{part}" }.Start();
        }

        public void Signal()
        {
            Interlocked.Increment(ref _generation);
            if (Interlocked.Exchange(ref _sleeping, 0) == 1) _wake.Release();
        }

        private void Loop()
        {
            int seen = 0;
            while (true)
            {
                long spinStart = System.Diagnostics.Stopwatch.GetTimestamp();
                while (Volatile.Read(ref _generation) == seen && System.Diagnostics.Stopwatch.GetElapsedTime(spinStart) < SpinBeforeSleep)
                    Thread.SpinWait(20);
                if (Volatile.Read(ref _generation) == seen)
                {
                    // A full fence (not a volatile write): the store of _sleeping must be visible before _generation is
                    // read again, or Signal can miss it while this thread misses the new generation (store-load
                    // reordering; the first version hung here). Whoever clears _sleeping first decides whether a
                    // Release is owed (Signal's exchange saw 1) and must be consumed.
                    Interlocked.Exchange(ref _sleeping, 1);
                    if (Volatile.Read(ref _generation) != seen && Interlocked.Exchange(ref _sleeping, 0) == 1) { }
                    else _wake.Wait();
                }
                seen = Volatile.Read(ref _generation);
                _team.RunClaimedParts(_scratch);
            }
        }
    }

    /// <summary>Native scratch that grows to the widest request (a thread's converted weight rows); freed by the
    /// finaliser once its thread is gone (engine threads come and go with their engines).</summary>
    private sealed class Scratch
    {
        private float* _buffer;
        private int _floats;

        ~Scratch()
        {
            if (_buffer is not null) NativeMemory.AlignedFree(_buffer);
        }

        public float* For(int floats)
        {
            if (floats > _floats)
            {
                if (_buffer is not null) NativeMemory.AlignedFree(_buffer);
                _buffer = (float*)NativeMemory.AlignedAlloc((nuint)floats * sizeof(float), 64);
                _floats = floats;
            }
            return _buffer;
        }
    }
}
