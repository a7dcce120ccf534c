using MetaStone.Cli.Doctor;

namespace MetaStone.Cli.Tests;

public sealed class TorchCheckTests
{
    [Fact]
    public void NativeTorchLoadsAndReportsVersions()
    {
        var check = new SystemDoctor().CheckTorch();
        Assert.True(check.Status == DoctorStatus.Ok, check.Detail + " / " + check.Fix);
        Assert.Contains("TorchSharp 0.107.0", check.Detail);
        Assert.Contains("libtorch-cpu-linux-x64 2.10.0", check.Detail);
        Assert.Contains("torch.ones(1) ok", check.Detail);
    }
}
