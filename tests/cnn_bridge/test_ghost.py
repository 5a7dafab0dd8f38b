"""Ghost modules and Ghost-ResNet: an identity cheap kernel copies the intrinsic channels, and the
counted MACs / parameters match the module formula."""
import pytest
import torch

from cnn_bridge.counting import count_model
from cnn_bridge.models import GhostConv, build_cnn_model
from cnn_bridge.models.ghost import ghost_conv_macs


def test_identity_cheap_kernel_copies_intrinsic_channels():
    torch.manual_seed(0)
    module = GhostConv(3, 8, kernel_size=3, stride=1, padding=1, ratio=2, cheap_kernel=3)
    with torch.no_grad():
        module.cheap.weight.zero_()
        module.cheap.weight[:, 0, 1, 1] = 1.0  # centre tap: the depthwise conv is the identity
    x = torch.randn(2, 3, 6, 6)
    out = module(x)
    intrinsic = module.primary(x)
    assert out.shape == (2, 8, 6, 6)
    assert torch.equal(out[:, :4], intrinsic)
    assert torch.equal(out[:, 4:], intrinsic)


@pytest.mark.parametrize("c_in, c_out, ratio, stride", [(16, 16, 2, 1), (16, 32, 2, 2), (5, 7, 3, 1)])
def test_module_macs_match_formula(c_in, c_out, ratio, stride):
    module = GhostConv(c_in, c_out, 3, stride, 1, ratio=ratio, cheap_kernel=3)
    side = 8 // stride
    counts = count_model(module, (c_in, 8, 8))
    intrinsic = -(-c_out // ratio)
    # by hand: primary m * C_in * 9 per position, cheap (s - 1) * m * 9 per position
    by_hand = intrinsic * c_in * 9 * side * side + (ratio - 1) * intrinsic * 9 * side * side
    assert counts["macs"]["dense"] == by_hand == ghost_conv_macs(c_in, c_out, 3, side * side, ratio, 3)
    assert counts["params"]["dense"] == intrinsic * c_in * 9 + (ratio - 1) * intrinsic * 9
    assert module(torch.zeros(1, c_in, 8, 8)).shape == (1, c_out, side, side)


@pytest.mark.parametrize("depth", [20, 56])
def test_ghost_resnet_counts(depth):
    """Stem conv and classifier as in ResNet; every block conv is a Ghost module (s = 2, d = 3)."""
    model = build_cnn_model(f"ghost_resnet{depth}")
    n = (depth - 2) // 6
    macs = 3 * 16 * 9 * 32 * 32 + 64 * 10
    params = 3 * 16 * 9 + 2 * 16 + 64 * 10 + 10
    width, side = 16, 32
    for stage, out in enumerate((16, 32, 64)):
        for block in range(n):
            stride = 2 if stage and block == 0 else 1
            side //= stride
            for c_in in (width, out):
                macs += ghost_conv_macs(c_in, out, 3, side * side)
                params += (out // 2) * c_in * 9 + (out // 2) * 9 + 2 * out  # primary, cheap, batch norm
            width = out
    counts = count_model(model, (3, 32, 32))
    assert counts["macs"]["dense"] == macs
    assert counts["params"]["dense"] == params
    dense = count_model(build_cnn_model(f"resnet{depth}"), (3, 32, 32))["macs"]["dense"]
    assert 0.5 <= macs / dense <= 0.53
