using TorchSharp;

namespace MetaStone.Model.Checkpoints;

/// <summary>The element types a safetensors header may name (the file spells them upper-case).</summary>
public enum SafeTensorsDType
{
    Bool,
    U8,
    I8,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
}

/// <summary>Conversions between safetensors dtype names, element sizes and TorchSharp scalar types.</summary>
public static class SafeTensorsDTypes
{
    /// <summary>Parses a header dtype name; null if the name is unknown or unsupported (e.g. the F8 types).</summary>
    public static SafeTensorsDType? TryParse(string name) => name switch
    {
        "BOOL" => SafeTensorsDType.Bool,
        "U8" => SafeTensorsDType.U8,
        "I8" => SafeTensorsDType.I8,
        "I16" => SafeTensorsDType.I16,
        "U16" => SafeTensorsDType.U16,
        "F16" => SafeTensorsDType.F16,
        "BF16" => SafeTensorsDType.BF16,
        "I32" => SafeTensorsDType.I32,
        "U32" => SafeTensorsDType.U32,
        "F32" => SafeTensorsDType.F32,
        "F64" => SafeTensorsDType.F64,
        "I64" => SafeTensorsDType.I64,
        "U64" => SafeTensorsDType.U64,
        _ => null,
    };

    /// <summary>The name as written in a safetensors header.</summary>
    public static string ToHeaderName(this SafeTensorsDType dtype) => dtype switch
    {
        SafeTensorsDType.Bool => "BOOL",
        _ => dtype.ToString(),
    };

    public static int ElementSize(this SafeTensorsDType dtype) => dtype switch
    {
        SafeTensorsDType.Bool or SafeTensorsDType.U8 or SafeTensorsDType.I8 => 1,
        SafeTensorsDType.I16 or SafeTensorsDType.U16 or SafeTensorsDType.F16 or SafeTensorsDType.BF16 => 2,
        SafeTensorsDType.I32 or SafeTensorsDType.U32 or SafeTensorsDType.F32 => 4,
        SafeTensorsDType.F64 or SafeTensorsDType.I64 or SafeTensorsDType.U64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null),
    };

    /// <summary>
    /// The TorchSharp type holding this dtype, or null for U16/U32/U64, which TorchSharp 0.107's
    /// <see cref="torch.ScalarType"/> cannot express (reinterpreting them as signed would silently change values).
    /// </summary>
    public static torch.ScalarType? ToScalarType(this SafeTensorsDType dtype) => dtype switch
    {
        SafeTensorsDType.Bool => torch.ScalarType.Bool,
        SafeTensorsDType.U8 => torch.ScalarType.Byte,
        SafeTensorsDType.I8 => torch.ScalarType.Int8,
        SafeTensorsDType.I16 => torch.ScalarType.Int16,
        SafeTensorsDType.F16 => torch.ScalarType.Float16,
        SafeTensorsDType.BF16 => torch.ScalarType.BFloat16,
        SafeTensorsDType.I32 => torch.ScalarType.Int32,
        SafeTensorsDType.F32 => torch.ScalarType.Float32,
        SafeTensorsDType.F64 => torch.ScalarType.Float64,
        SafeTensorsDType.I64 => torch.ScalarType.Int64,
        _ => null,
    };

    /// <summary>The safetensors dtype for a TorchSharp type, or null (complex and quantized types have none).</summary>
    public static SafeTensorsDType? FromScalarType(torch.ScalarType scalarType) => scalarType switch
    {
        torch.ScalarType.Bool => SafeTensorsDType.Bool,
        torch.ScalarType.Byte => SafeTensorsDType.U8,
        torch.ScalarType.Int8 => SafeTensorsDType.I8,
        torch.ScalarType.Int16 => SafeTensorsDType.I16,
        torch.ScalarType.Float16 => SafeTensorsDType.F16,
        torch.ScalarType.BFloat16 => SafeTensorsDType.BF16,
        torch.ScalarType.Int32 => SafeTensorsDType.I32,
        torch.ScalarType.Float32 => SafeTensorsDType.F32,
        torch.ScalarType.Float64 => SafeTensorsDType.F64,
        torch.ScalarType.Int64 => SafeTensorsDType.I64,
        _ => null,
    };
}
