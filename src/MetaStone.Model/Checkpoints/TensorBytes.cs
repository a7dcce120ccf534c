using TorchSharp;

namespace MetaStone.Model.Checkpoints;

/// <summary>
/// Moves raw bytes between streams and contiguous CPU tensors in chunks, straight into (or out of) native memory.
/// Chunking matters because <see cref="torch.Tensor.bytes"/> is a <see cref="Span{T}"/> and so stops at 2 GB,
/// while a single embedding matrix of a large model can exceed that.
/// </summary>
internal static class TensorBytes
{
    private const long ChunkBytes = 64L * 1024 * 1024;

    /// <summary>Fills the contiguous CPU tensor <paramref name="target"/> with exactly its byte size from the stream.</summary>
    public static void ReadInto(torch.Tensor target, Stream source)
    {
        long elementCount = target.numel();
        if (elementCount == 0)
            return;
        using var flat = target.view(-1);
        long elementsPerChunk = Math.Max(1, ChunkBytes / target.element_size());
        for (long start = 0; start < elementCount; start += elementsPerChunk)
        {
            using var chunk = flat.narrow(0, start, Math.Min(elementsPerChunk, elementCount - start));
            source.ReadExactly(chunk.bytes);
        }
    }

    /// <summary>
    /// Fills the contiguous tensor <paramref name="target"/> (any device, any dtype) from <paramref name="sourceType"/>
    /// data in the stream, through one CPU chunk of at most <see cref="ChunkBytes"/> that <c>copy_</c> converts.
    /// </summary>
    public static void ReadConverted(torch.Tensor target, torch.ScalarType sourceType, Stream source)
    {
        long elementCount = target.numel();
        if (elementCount == 0)
            return;
        using var scope = torch.NewDisposeScope();
        var flat = target.view(-1);
        var probe = torch.empty(1, sourceType);
        long elementsPerChunk = Math.Max(1, ChunkBytes / probe.element_size());
        var chunkBuffer = torch.empty(Math.Min(elementsPerChunk, elementCount), sourceType);
        for (long start = 0; start < elementCount; start += elementsPerChunk)
        {
            long count = Math.Min(elementsPerChunk, elementCount - start);
            var chunk = chunkBuffer.narrow(0, 0, count);
            source.ReadExactly(chunk.bytes);
            flat.narrow(0, start, count).copy_(chunk);
        }
    }

    /// <summary>Writes the bytes of a contiguous CPU tensor.</summary>
    public static void WriteFrom(torch.Tensor source, Stream target)
    {
        long elementCount = source.numel();
        if (elementCount == 0)
            return;
        using var flat = source.view(-1);
        long elementsPerChunk = Math.Max(1, ChunkBytes / source.element_size());
        for (long start = 0; start < elementCount; start += elementsPerChunk)
        {
            using var chunk = flat.narrow(0, start, Math.Min(elementsPerChunk, elementCount - start));
            target.Write(chunk.bytes);
        }
    }
}
