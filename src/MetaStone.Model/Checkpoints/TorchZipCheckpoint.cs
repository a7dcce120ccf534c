using System.IO.Compression;
using System.Text;
using TorchSharp;

namespace MetaStone.Model.Checkpoints;

/// <summary>
/// Restricted reader for PyTorch's <c>torch.save</c> zip format, as used by MetaStone's <c>score_module.pt</c>:
/// <c>&lt;prefix&gt;/data.pkl</c> (a pickled state dict) and raw little-endian storages under
/// <c>&lt;prefix&gt;/data/&lt;key&gt;</c>. Only state dicts of plain tensors are accepted; the pickle goes through
/// <see cref="RestrictedUnpickler"/>, which refuses every global outside a small allow-list and executes nothing.
/// </summary>
public static class TorchZipCheckpoint
{
    /// <summary>data.pkl of a state dict is a few KB per tensor; a huge one is not something we want to parse.</summary>
    private const long MaxPickleBytes = 64L * 1024 * 1024;

    /// <summary>Loads the state dict as name → tensor, with the file's dtypes, shapes and strides.</summary>
    /// <param name="castTo">Converts floating-point tensors to this type; integer and bool tensors keep theirs.</param>
    public static Dictionary<string, torch.Tensor> Load(string path, torch.Device? device = null, torch.ScalarType? castTo = null)
    {
        SafeTensors.EnsureLittleEndianHost();
        ZipArchive archive;
        try
        {
            archive = ZipFile.OpenRead(path);
        }
        catch (InvalidDataException e)
        {
            throw new CheckpointFormatException($"torch checkpoint '{path}' is not a zip archive (legacy non-zip torch.save files are not supported)", e);
        }

        using (archive)
        {
            string prefix = FindPrefix(archive, path);
            CheckByteOrder(archive, prefix, path);

            var pickleEntry = archive.GetEntry(prefix + "data.pkl")!;
            if (pickleEntry.Length > MaxPickleBytes)
                throw new CheckpointFormatException($"torch checkpoint '{path}': data.pkl is {pickleEntry.Length} bytes, over the {MaxPickleBytes}-byte limit");
            var pickle = new byte[pickleEntry.Length];
            using (var pickleStream = pickleEntry.Open())
                pickleStream.ReadExactly(pickle);

            var root = RestrictedUnpickler.Load(pickle, path);
            var tensorReferences = ToStateDict(root, path);
            return Materialize(archive, prefix, tensorReferences, path, device, castTo);
        }
    }

    /// <summary>The archive's single top-level folder holding data.pkl (torch names it after the file, or "archive").</summary>
    private static string FindPrefix(ZipArchive archive, string path)
    {
        var candidates = archive.Entries
            .Select(e => e.FullName)
            .Where(n => n.EndsWith("/data.pkl", StringComparison.Ordinal) && n.IndexOf('/') == n.Length - "/data.pkl".Length)
            .ToList();
        return candidates.Count switch
        {
            1 => candidates[0][..^"data.pkl".Length],
            0 => throw new CheckpointFormatException($"torch checkpoint '{path}' has no '<name>/data.pkl' record"),
            _ => throw new CheckpointFormatException($"torch checkpoint '{path}' has {candidates.Count} data.pkl records"),
        };
    }

    private static void CheckByteOrder(ZipArchive archive, string prefix, string path)
    {
        // Written by PyTorch >= 2.1; older files (like the 1.13 fixtures) are little-endian without saying so.
        var entry = archive.GetEntry(prefix + "byteorder");
        if (entry is null)
            return;
        using var reader = new StreamReader(entry.Open(), Encoding.ASCII);
        string byteOrder = reader.ReadToEnd().Trim();
        if (byteOrder != "little")
            throw new CheckpointFormatException($"torch checkpoint '{path}' has byte order '{byteOrder}'; only 'little' is supported");
    }

    private static List<(string Name, TensorReference Tensor)> ToStateDict(object? root, string path)
    {
        if (root is not PickleDict dict)
            throw new CheckpointFormatException($"torch checkpoint '{path}' does not hold a state dict (a dict of tensors)");
        var result = new List<(string, TensorReference)>();
        foreach (var (key, value) in dict.Items)
        {
            if (key is not string name)
                throw new CheckpointFormatException($"torch checkpoint '{path}': state dict key {key} is not a string");
            if (value is not TensorReference tensor)
                throw new CheckpointFormatException($"torch checkpoint '{path}', tensor '{name}': value is not a tensor");
            result.Add((name, tensor));
        }
        return result;
    }

    private static Dictionary<string, torch.Tensor> Materialize(
        ZipArchive archive,
        string prefix,
        List<(string Name, TensorReference Tensor)> tensorReferences,
        string path,
        torch.Device? device,
        torch.ScalarType? castTo)
    {
        var storages = new Dictionary<string, torch.Tensor>(StringComparer.Ordinal);
        var result = new Dictionary<string, torch.Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var (name, reference) in tensorReferences)
            {
                var storage = reference.Storage;
                if (!storages.TryGetValue(storage.Key, out var storageTensor))
                {
                    storageTensor = ReadStorage(archive, prefix, storage, name, path);
                    storages.Add(storage.Key, storageTensor);
                }
                else if (storageTensor.dtype != storage.ScalarType || storageTensor.numel() != storage.ElementCount)
                {
                    throw new CheckpointFormatException(
                        $"torch checkpoint '{path}', tensor '{name}': storage '{storage.Key}' is described two different ways");
                }

                CheckView(reference, name, path);
                // as_strided shares the storage (as torch.load does for tensors saved from one storage, e.g. tied
                // weights); contiguous() copies only when the saved view was not already contiguous.
                using var view = storageTensor.as_strided(reference.Size, reference.Stride, reference.StorageOffset);
                var tensor = view.contiguous();
                result.Add(name, tensor);
                result[name] = SafeTensors.ConvertAndMove(tensor, device, castTo);
            }
            return result;
        }
        catch
        {
            foreach (var tensor in result.Values)
                tensor.Dispose();
            throw;
        }
        finally
        {
            // The views keep the native storage alive; these handles are no longer needed.
            foreach (var storageTensor in storages.Values)
                storageTensor.Dispose();
        }
    }

    private static torch.Tensor ReadStorage(ZipArchive archive, string prefix, StorageReference storage, string tensorName, string path)
    {
        // Keys are decimal numbers in torch.save output; anything else could walk the archive paths.
        if (storage.Key.Length == 0 || !storage.Key.All(char.IsAsciiDigit))
            throw new CheckpointFormatException($"torch checkpoint '{path}', tensor '{tensorName}': storage key '{storage.Key}' is not a number");
        string entryName = prefix + "data/" + storage.Key;
        var entry = archive.GetEntry(entryName)
            ?? throw new CheckpointFormatException($"torch checkpoint '{path}', tensor '{tensorName}': storage record '{entryName}' is missing");

        var tensor = torch.empty([storage.ElementCount], storage.ScalarType);
        try
        {
            long expectedBytes = storage.ElementCount * tensor.element_size();
            if (entry.Length != expectedBytes)
            {
                throw new CheckpointFormatException(
                    $"torch checkpoint '{path}', tensor '{tensorName}': storage record '{entryName}' has {entry.Length} bytes, expected {expectedBytes} ({storage.ElementCount} x {storage.ScalarType})");
            }
            using var stream = entry.Open();
            TensorBytes.ReadInto(tensor, stream);
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    /// <summary>Checks that the saved size/stride/offset stay inside the storage before as_strided trusts them.</summary>
    private static void CheckView(TensorReference reference, string name, string path)
    {
        if (reference.Size.Length != reference.Stride.Length)
            throw new CheckpointFormatException($"torch checkpoint '{path}', tensor '{name}': size and stride differ in length");
        if (reference.StorageOffset < 0 || reference.Size.Any(s => s < 0) || reference.Stride.Any(s => s < 0))
            throw new CheckpointFormatException($"torch checkpoint '{path}', tensor '{name}': negative size, stride or storage offset");
        if (reference.Size.Any(s => s == 0))
            return;
        try
        {
            long lastElement = reference.StorageOffset;
            for (int i = 0; i < reference.Size.Length; i++)
                lastElement = checked(lastElement + (reference.Size[i] - 1) * reference.Stride[i]);
            if (lastElement >= reference.Storage.ElementCount)
            {
                throw new CheckpointFormatException(
                    $"torch checkpoint '{path}', tensor '{name}': view reaches element {lastElement} of a {reference.Storage.ElementCount}-element storage");
            }
        }
        catch (OverflowException)
        {
            throw new CheckpointFormatException($"torch checkpoint '{path}', tensor '{name}': view extent overflows 64 bits");
        }
    }
}
