"""G-Ghost stages: the cheap path with an identity kernel and no mix passes the first block's
other channels to the last block; counted MACs match the stage formula."""
import pytest
import torch
from torch import nn

from cnn_bridge.counting import count_model
from cnn_bridge.models import GGhostCifarResNet, GGhostStage, build_cnn_model


def _identity_bn(bn: nn.BatchNorm2d) -> None:
    bn.reset_running_stats()  # eval mode: (x - 0) / sqrt(1 + eps), exactly x with eps = 0
    bn.eps = 0.0
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)


def test_identity_cheap_path_without_mix_passes_the_ghost_channels_through():
    torch.manual_seed(0)
    stage = GGhostStage(4, 8, blocks=4, stride=2, cheap_ratio=0.25).eval()  # 2 cheap, 6 complicated channels
    assert stage.raw_channels == 6 and len(stage.middle) == 2
    with torch.no_grad():
        nn.init.eye_(stage.cheap[0].weight.view(2, 2))
        _identity_bn(stage.cheap[1])
        nn.init.zeros_(stage.mix[-1].weight)  # the mix term is 0
        x = torch.randn(3, 4, 8, 8)
        x0 = stage.base(x)
        e = stage.middle[1](stage.middle[0](x0[:, :6]))
        expected = stage.end(torch.cat([e, x0[:, 6:]], 1))  # x0 >= 0 (a ReLU output): the ReLU keeps it
        out = stage(x)
    assert out.shape == (3, 8, 4, 4)
    assert torch.allclose(out, expected, rtol=0, atol=1e-6)


def _block_macs(c_in, c_out, positions):
    return (c_in * c_out + c_out * c_out) * 9 * positions


@pytest.mark.parametrize("depth", [20, 56])
def test_g_ghost_resnet_macs_match_the_stage_formula(depth):
    n = (depth - 2) // 6
    macs = 3 * 16 * 9 * 32 * 32 + 64 * 10  # stem and classifier
    width, side = 16, 32
    for stage, out in enumerate((16, 32, 64)):
        side //= 2 if stage else 1
        positions, cheap = side * side, out // 2
        raw = out - cheap
        macs += _block_macs(width, out, positions) + _block_macs(out, out, positions)  # base and end
        macs += (n - 2) * _block_macs(raw, raw, positions)                             # the middle blocks
        macs += cheap * cheap * positions                                               # cheap 1x1
        macs += (out + raw * (n - 2)) * cheap + cheap * cheap                           # mix, on pooled features
        width = out
    assert count_model(build_cnn_model(f"g_ghost_resnet{depth}"), (3, 32, 32))["macs"]["dense"] == macs


@pytest.mark.parametrize("kwargs, message", [
    ({"blocks": 2}, "a G-Ghost stage needs at least 3 blocks, got 2"),
    ({"blocks": 3, "cheap_ratio": 1.0}, r"cheap_ratio must be in \(0, 1\), got 1.0"),
    ({"blocks": 3, "cheap_ratio": 0.99}, "leaves no complicated channel"),
])
def test_bad_stages_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GGhostStage(8, 8, **kwargs)


def test_shallow_resnets_have_no_g_ghost_version():
    with pytest.raises(ValueError, match="depth >= 20"):
        GGhostCifarResNet(14)
