using TorchSharp;

namespace MetaStone.Model.Tests.Checkpoints;

internal static class TensorAssert
{
    /// <summary>Same dtype, same shape, same bytes (so NaN payloads and -0.0 count too).</summary>
    public static void BitwiseEqual(torch.Tensor expected, torch.Tensor actual, string name)
    {
        Assert.True(expected.dtype == actual.dtype, $"{name}: dtype {actual.dtype}, expected {expected.dtype}");
        Assert.True(expected.shape.SequenceEqual(actual.shape),
            $"{name}: shape [{string.Join(",", actual.shape)}], expected [{string.Join(",", expected.shape)}]");
        using var expectedContiguous = expected.cpu().contiguous();
        using var actualContiguous = actual.cpu().contiguous();
        if (expected.numel() == 0)
            return;
        Assert.True(expectedContiguous.bytes.SequenceEqual(actualContiguous.bytes), $"{name}: bytes differ");
    }

    public static void DisposeAll(IEnumerable<torch.Tensor> tensors)
    {
        foreach (var tensor in tensors)
            tensor.Dispose();
    }
}
