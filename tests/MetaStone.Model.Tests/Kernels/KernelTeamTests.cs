using MetaStone.Model.Kernels;

namespace MetaStone.Model.Tests.Kernels;

/// <summary>The kernel team runs every part of every job exactly once, from any number of callers, and survives a part
/// that throws on the calling thread.</summary>
public sealed unsafe class KernelTeamTests
{
    /// <summary>Counts the runs of each part in a caller-owned array; throws on the calling thread when asked.</summary>
    private struct CountingJob : ITeamJob
    {
        public int* Runs;
        public int* SplitInto;
        public int Parts;
        public int ThrowOnThread;   // managed thread id whose part throws; 0: none
        public long SpinIterations;
        public long WorkerSpinIterations;   // on threads other than ThrowOnThread, when set

        public readonly int PartsFor(int threads) => Parts;
        public readonly int ScratchFloats => 16;

        public readonly void RunPart(int part, int parts, float* scratch)
        {
            // Parts as the team split them: all of them, or one on the calling thread while another caller has the team.
            *SplitInto = parts;
            scratch[15] = part;                             // the scratch is writable to its last float
            bool onCaller = Environment.CurrentManagedThreadId == ThrowOnThread;
            // Long enough that workers get to claim parts; longer on a worker, so the caller claims one too.
            Thread.SpinWait((int)(!onCaller && WorkerSpinIterations > 0 ? WorkerSpinIterations : SpinIterations));
            Interlocked.Increment(ref Runs[part]);
            if (onCaller) throw new InvalidOperationException("caller's part failed");
        }
    }

    [Fact]
    public void Every_part_runs_once_while_two_callers_share_the_team()
    {
        int threads = Math.Max(2, Environment.ProcessorCount);
        const int jobsPerCaller = 2000;
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        void Caller(int seed)
        {
            var random = new Random(seed);
            int* runs = stackalloc int[threads];
            int splitInto = 0;
            for (int j = 0; j < jobsPerCaller; j++)
            {
                new Span<int>(runs, threads).Clear();
                var job = new CountingJob
                {
                    Runs = runs, SplitInto = &splitInto, Parts = random.Next(1, threads + 1), SpinIterations = random.Next(0, 2000),
                };
                KernelTeam.Shared.Run(ref job, threads);
                if (splitInto != job.Parts && splitInto != 1) failures.Enqueue($"caller {seed}, job {j}: split into {splitInto} parts");
                for (int p = 0; p < threads; p++)
                {
                    int expected = p < splitInto ? 1 : 0;
                    if (runs[p] != expected) failures.Enqueue($"caller {seed}, job {j}: part {p} of {job.Parts} ran {runs[p]} times");
                }
            }
        }
        var callers = new[] { new Thread(() => Caller(1)), new Thread(() => Caller(2)) };
        foreach (var caller in callers) caller.Start();
        foreach (var caller in callers) Assert.True(caller.Join(TimeSpan.FromSeconds(60)), "a caller did not finish within 60 s");
        Assert.Empty(failures);
    }

    [Fact]
    public void A_part_that_throws_on_the_caller_surfaces_and_the_team_runs_the_next_job()
    {
        int threads = Math.Max(2, Environment.ProcessorCount);
        int* runs = stackalloc int[threads];
        int splitInto = 0;
        int thrown = 0;
        for (int attempt = 0; attempt < 50; attempt++)
        {
            new Span<int>(runs, threads).Clear();
            var failing = new CountingJob
            {
                Runs = runs, SplitInto = &splitInto, Parts = threads, ThrowOnThread = Environment.CurrentManagedThreadId,
                SpinIterations = 5000, WorkerSpinIterations = 200_000,
            };
            // The caller runs a part unless the workers took them all (it was descheduled meanwhile, with tests running
            // in parallel): then nothing throws and every part ran.
            try
            {
                KernelTeam.Shared.Run(ref failing, threads);
                for (int p = 0; p < threads; p++) Assert.Equal(p < splitInto ? 1 : 0, runs[p]);
            }
            catch (InvalidOperationException error)
            {
                Assert.Equal("caller's part failed", error.Message);
                thrown++;
                for (int p = 0; p < threads; p++) Assert.InRange(runs[p], 0, 1);   // withdrawn parts never run later
            }

            new Span<int>(runs, threads).Clear();
            var next = new CountingJob { Runs = runs, SplitInto = &splitInto, Parts = threads, SpinIterations = 5000 };
            KernelTeam.Shared.Run(ref next, threads);
            for (int p = 0; p < splitInto; p++) Assert.Equal(1, runs[p]);
        }
        Assert.True(thrown >= 25, $"the caller's part threw in {thrown} of 50 attempts");
    }
}
