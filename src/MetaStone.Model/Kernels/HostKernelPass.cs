using static TorchSharp.torch;

namespace MetaStone.Model.Kernels;

/// <summary>
/// While a forward pass runs its matmuls in <see cref="HostLinear"/>, torch's own ops run on one thread and the kernel
/// team takes the threads torch was given.
/// </summary>
/// <remarks>
/// libtorch's OpenMP (libgomp) workers spin for a while after every parallel region. On a machine with as many threads
/// as cores, a spinning OpenMP worker and a kernel worker fight for one core until the scheduler's time slice ends:
/// measured on the 0.5B shape, fp32, one row, 2 cores: a decode forward took 415–498 ms with torch on two threads next
/// to the kernel team, 66–69 ms with torch on one (the same as with <c>OMP_WAIT_POLICY=passive</c>, which libgomp only
/// reads when it loads, before any code of ours runs). The element-wise ops between the matmuls of a decode step are
/// too small to gain from a second thread anyway. Torch's thread count is process-wide, so passes of several engines
/// share one count of active passes: the first sets one thread, the last restores the count it found.
/// </remarks>
internal static class HostKernelPass
{
    private static readonly Lock Gate = new();
    private static int s_active;
    private static int s_threads = 1;

    /// <summary>Threads of the kernel team: torch's count when the first active pass began, else torch's count now.</summary>
    public static int Threads
    {
        get
        {
            lock (Gate) return s_active > 0 ? s_threads : get_num_threads();
        }
    }

    /// <summary>True while a pass is active: torch is on one thread and the kernel team may take the others. Outside a
    /// pass torch's OpenMP workers own them (and spin after every parallel region).</summary>
    public static bool IsActive
    {
        get
        {
            lock (Gate) return s_active > 0;
        }
    }

    public static Scope Begin()
    {
        lock (Gate)
        {
            if (s_active++ == 0)
            {
                s_threads = get_num_threads();
                if (s_threads > 1) set_num_threads(1);
            }
        }
        return new Scope(true);
    }

    public readonly struct Scope(bool active) : IDisposable
    {
        public void Dispose()
        {
            if (!active) return;
            lock (Gate)
            {
                if (--s_active == 0 && s_threads > 1) set_num_threads(s_threads);
            }
        }
    }
}
