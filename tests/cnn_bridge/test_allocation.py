"""Channel budgets: the lowest scores go (ties by index); one fraction for a MAC target."""

import pytest
import torch

from cnn_bridge.allocation import MacModel, keep_lowest_pruned, uniform_fraction_for
from cnn_bridge.channel_masks import ChannelMasks, channel_engine
from cnn_bridge.compact import prunable_layers
from cnn_bridge.counting import count_model
from cnn_bridge.models import build_cnn_model

SHAPE = (3, 32, 32)


def test_keep_lowest_pruned_removes_floor_fraction_and_keeps_one():
    scores = torch.tensor([3.0, 1.0, 2.0, 0.5])
    assert keep_lowest_pruned(scores, 0.5).tolist() == [True, False, True, False]
    assert keep_lowest_pruned(scores, 0.99).tolist() == [True, False, False, False]


def test_keep_lowest_pruned_ties_scores_within_the_tolerance_by_index():
    tied = torch.tensor([1.0 + 1e-12, 1.0, 5.0], dtype=torch.float64)  # equal but for rounding
    assert keep_lowest_pruned(tied, 1 / 3).tolist() == [False, True, True]
    apart = torch.tensor([1.0 + 1e-6, 1.0, 5.0], dtype=torch.float64)
    assert keep_lowest_pruned(apart, 1 / 3).tolist() == [True, False, True]


def test_mac_model_matches_masked_count_and_bisection_meets_target():
    model = build_cnn_model("resnet20")
    layers = prunable_layers(model, SHAPE)
    macs = MacModel.of(model, layers, SHAPE)
    assert macs.macs() == count_model(model, SHAPE)["macs"]["dense"]
    fraction = uniform_fraction_for(macs, 0.4)
    kept = macs.kept_at({layer.conv: fraction for layer in layers})
    keep = {layer.conv: torch.arange(layer_channels) < kept[layer.conv]
            for layer, layer_channels in zip(layers, (model.get_submodule(l.conv).out_channels for l in layers))}
    counts = ChannelMasks(channel_engine(model, layers, keep), model, layers).count(SHAPE)
    assert counts["macs"]["pruned"] == macs.macs(kept) <= 0.6 * macs.macs()
    slightly_less = macs.kept_at({layer.conv: fraction - 0.02 for layer in layers})
    assert macs.macs(slightly_less) > 0.6 * macs.macs()


def test_unreachable_mac_target_says_how_far_it_can_go():
    model = build_cnn_model("resnet20")
    with pytest.raises(ValueError, match="out of reach"):
        uniform_fraction_for(MacModel.of(model, prunable_layers(model, SHAPE), SHAPE), 0.99)
