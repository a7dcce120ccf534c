using TorchSharp;
using static TorchSharp.torch;

namespace MetaStone.Model;

/// <summary>Parsing of user-facing device and dtype names.</summary>
public static class TorchSettings
{
    public static ScalarType ParseDtype(string name) => name.Trim().ToLowerInvariant() switch
    {
        "fp32" or "float32" or "float" or "f32" => ScalarType.Float32,
        "bf16" or "bfloat16" => ScalarType.BFloat16,
        "fp16" or "float16" or "half" or "f16" => ScalarType.Float16,
        _ => throw new ArgumentException($"unknown dtype '{name}' (valid: fp32, bf16, fp16)", nameof(name)),
    };

    public static string DtypeName(ScalarType t) => t switch
    {
        ScalarType.Float32 => "float32",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float16 => "float16",
        _ => t.ToString().ToLowerInvariant(),
    };

    /// <summary>"cpu", "cuda", "cuda:N"; a CUDA device is checked for availability with a clear error.</summary>
    public static Device ParseDevice(string name)
    {
        var n = name.Trim().ToLowerInvariant();
        if (n == "cpu") return CPU;
        if (n == "cuda" || n.StartsWith("cuda:", StringComparison.Ordinal))
        {
            if (!cuda.is_available())
                throw new ArgumentException($"device '{name}' requested but CUDA is not available (this build uses the {(typeof(torch).Assembly.GetName().Name)} CPU backend unless built with -p:TorchBackend=cuda, or no GPU/driver is visible)");
            int index = n == "cuda" ? 0 : int.Parse(n[5..], System.Globalization.CultureInfo.InvariantCulture);
            int count = cuda.device_count();
            if (index < 0 || index >= count)
                throw new ArgumentException($"device '{name}' does not exist: {count} CUDA device(s) visible");
            return new Device(DeviceType.CUDA, index);
        }
        throw new ArgumentException($"unknown device '{name}' (valid: cpu, cuda, cuda:N)", nameof(name));
    }
}
