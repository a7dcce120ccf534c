using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MetaStone.Model;

/// <summary>
/// The self-supervised process reward head of MetaStone-S1:
/// <c>Linear(c, 2c) → ReLU → Dropout(0.5) → Linear(2c, 1)</c>, step score = sigmoid(logit).
/// Built as an <c>nn.Sequential</c> so its state-dict keys are exactly the released ones
/// (<c>0.weight [2c,c]</c>, <c>0.bias</c>, <c>3.weight [1,2c]</c>, <c>3.bias</c>). Kept in fp32 whatever the
/// backbone dtype: it is tiny and its input is cast up, so scores do not depend on bf16 rounding of the head.
/// </summary>
public sealed class SprmHead : IDisposable
{
    public static readonly string[] StateDictKeys = ["0.weight", "0.bias", "3.weight", "3.bias"];

    public Sequential Module { get; }
    public int Channels { get; }
    public Device Device { get; }

    public SprmHead(int channels, Device device)
    {
        Channels = channels;
        Device = device;
        Module = nn.Sequential(
            nn.Linear(channels, 2 * channels, hasBias: true, device: device, dtype: ScalarType.Float32),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(2 * channels, 1, hasBias: true, device: device, dtype: ScalarType.Float32));
        Module.eval();
    }

    public long ParameterCount => 2L * Channels * Channels + 4L * Channels + 1;

    /// <summary>Step logits for features [N, c] (any dtype) → [N] fp32. Dropout is off unless training.</summary>
    public Tensor Logits(Tensor features) => Module.forward(features.to_type(ScalarType.Float32)).squeeze(-1);

    /// <summary>Step logits of the given rows of <paramref name="features"/> [N, c], read back as floats: what the engine
    /// needs after every decode step that ends a step somewhere in the batch.</summary>
    /// <remarks>On the host (AVX-512, CPU fp32, no gradients) this reads the rows and the head's weights in place: the
    /// torch route (index tensor, gather, cast, two Linears through <c>nn.Sequential</c>, read-back) took ~37 µs for two
    /// rows of the bench's tiny shape (c = 256), ~1.5 % of its 2.3 ms best-of-32 decode step, against the issue's 3 %
    /// budget for in-flight scoring; this takes a few µs. Sums run in another order than torch's, so the logits can
    /// differ from <see cref="Logits"/> in the last bits (~1e-6 relative).</remarks>
    public float[] LogitsOfRows(Tensor features, long[] rows)
    {
        if (features.dim() != 2 || features.shape[1] != Channels)
            throw new ArgumentException($"features must be [N, {Channels}], got [{string.Join(", ", features.shape)}]", nameof(features));
        foreach (long row in rows)
            if ((ulong)row >= (ulong)features.shape[0]) throw new ArgumentOutOfRangeException(nameof(rows), $"row {row} of {features.shape[0]}");
        if (rows.Length == 0) return [];
        var first = (Linear)Module[0];
        var second = (Linear)Module[3];
        Tensor w1 = first.weight!, b1 = first.bias!, w2 = second.weight!, b2 = second.bias!;
        bool host = Kernels.HostLinear.IsSupported && !is_grad_enabled() && features.device_type == DeviceType.CPU
            && features.dtype == ScalarType.Float32 && Channels % 16 == 0
            && InPlace(w1) && InPlace(b1) && InPlace(w2) && InPlace(b2);
        if (!host)
        {
            using var scope = NewDisposeScope();
            return Logits(features.index_select(0, tensor(rows, device: features.device))).cpu().data<float>().ToArray();
        }
        using var rowsScope = NewDisposeScope();
        var input = features.is_contiguous() ? features : features.contiguous();
        var logits = new float[rows.Length];
        unsafe
        {
            Kernels.SprmHostHead.Logits((float*)Kernels.HostLinear.DataPointer(input), rows, Channels,
                (float*)Kernels.HostLinear.DataPointer(w1), (float*)Kernels.HostLinear.DataPointer(b1),
                (float*)Kernels.HostLinear.DataPointer(w2), *(float*)Kernels.HostLinear.DataPointer(b2), logits);
        }
        GC.KeepAlive(input);
        GC.KeepAlive(Module);
        return logits;

        static bool InPlace(Tensor t) => t.device_type == DeviceType.CPU && t.dtype == ScalarType.Float32 && t.is_contiguous();
    }

    /// <summary>Loads the four released tensors, checking names and shapes; <paramref name="source"/> names the file in errors.</summary>
    public void Load(IReadOnlyDictionary<string, Tensor> tensors, string source)
    {
        var expected = new Dictionary<string, long[]>
        {
            ["0.weight"] = [2L * Channels, Channels],
            ["0.bias"] = [2L * Channels],
            ["3.weight"] = [1, 2L * Channels],
            ["3.bias"] = [1],
        };
        var unexpected = tensors.Keys.Where(k => !expected.ContainsKey(k)).ToList();
        if (unexpected.Count > 0)
            throw new InvalidDataException($"{source}: unexpected tensor(s) in SPRM head: {string.Join(", ", unexpected)} (expected {string.Join(", ", StateDictKeys)})");
        var state = new Dictionary<string, Tensor>();
        foreach (var (name, shape) in expected)
        {
            if (!tensors.TryGetValue(name, out var t))
                throw new InvalidDataException($"{source}: SPRM head tensor '{name}' is missing");
            if (!t.shape.SequenceEqual(shape))
                throw new InvalidDataException($"{source}: SPRM head tensor '{name}' has shape [{string.Join(",", t.shape)}], expected [{string.Join(",", shape)}] for a backbone of hidden size {Channels}");
            state[name] = t;
        }
        using var _ = no_grad();
        Module.load_state_dict(state, strict: true);
    }

    /// <summary>The head's tensors under the released names (fp32, CPU).</summary>
    public Dictionary<string, Tensor> StateDict() =>
        Module.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().cpu());

    public void Dispose() => Module.Dispose();
}
