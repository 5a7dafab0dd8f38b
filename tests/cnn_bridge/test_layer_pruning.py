import pytest
import torch

from cnn_bridge.layer_pruning import (modularity_gains, modularity_guided_blocks, random_blocks, remove_blocks,
                                      removable_blocks, weight_depth)
from cnn_bridge.models import CifarResNet


def test_removable_blocks_of_resnet20_skip_downsampling_blocks():
    assert removable_blocks(CifarResNet(20)) == [0, 1, 2, 4, 5, 7, 8]


def test_removing_a_block_whose_residual_branch_is_zero_keeps_the_function():
    torch.manual_seed(0)
    model = CifarResNet(20).eval()
    with torch.no_grad():
        model.layers[4].bn2.weight.zero_()
        model.layers[4].bn2.bias.zero_()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        assert torch.allclose(remove_blocks(model, [4])(x), before, atol=1e-6)
    assert weight_depth(model) == 20 - 2
    with pytest.raises(ValueError, match="block 3 cannot be removed"):
        remove_blocks(model, [3])


def test_modularity_guided_choice_takes_the_smallest_gains_among_removable_blocks():
    curve = [0.0, 0.1, 0.1, 0.3, 0.35, 0.5, 0.5, 0.6, 0.6, 0.6]  # stem + 9 blocks
    assert modularity_gains(curve)[:3] == pytest.approx([0.1, 0.0, 0.2])
    # gains: b0 .1, b1 0, b2 .2, b3 .05 (not removable), b4 .15, b5 0, b6 .1 (not), b7 0, b8 0
    assert modularity_guided_blocks(curve, [0, 1, 2, 4, 5, 7, 8], 3) == [1, 5, 7]


def test_random_choice_is_seeded_and_within_removable():
    first = random_blocks([0, 1, 2, 4, 5, 7, 8], 3, seed=1)
    assert first == random_blocks([0, 1, 2, 4, 5, 7, 8], 3, seed=1)
    assert len(set(first)) == 3 and set(first) <= {0, 1, 2, 4, 5, 7, 8}
    with pytest.raises(ValueError, match="can remove 1 to 7 blocks"):
        random_blocks([0, 1, 2, 4, 5, 7, 8], 8, seed=0)
