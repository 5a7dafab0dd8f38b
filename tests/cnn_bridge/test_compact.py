"""Compaction: the compact model computes what the masked model computes, with the masked counts."""
import copy

import pytest
import torch
from torch import nn

from cnn_bridge.allocation import MacModel, keep_for_fractions, uniform_fraction_for
from cnn_bridge.channel_masks import ChannelMasks, channel_engine
from cnn_bridge.compact import architecture, load_compact, prunable_layers, remove_channels, save_compact
from cnn_bridge.counting import count_model
from cnn_bridge.criteria import l1
from cnn_bridge.models import build_cnn_model
from cnn_bridge.channel_scores import score_layers

SHAPE = (3, 32, 32)


def calibrated(name: str) -> nn.Module:
    """A randomly initialised model whose batch norms carry statistics of random inputs, so
    activations are O(1) through all layers (as in a trained model)."""
    torch.manual_seed(0)
    model = build_cnn_model(name)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(16, *SHAPE))
    return model.eval()


def masked_half_macs(name: str):
    model = calibrated(name)
    layers = prunable_layers(model, SHAPE)
    fraction = uniform_fraction_for(MacModel.of(model, layers, SHAPE), 0.5)
    keep = keep_for_fractions(score_layers(model, layers, l1), {layer.conv: fraction for layer in layers})
    masks = ChannelMasks(channel_engine(model, layers, keep), model, layers)
    masks.apply()
    return model, layers, keep, masks


@pytest.mark.parametrize("name", ["resnet56", "vgg16_bn"])
def test_compact_equals_masked(name):
    model, layers, keep, masks = masked_half_macs(name)
    counts = masks.count(SHAPE)
    assert counts["macs"]["ratio"] <= 0.5
    small = remove_channels(copy.deepcopy(model), keep, SHAPE).eval()
    x = torch.randn(8, *SHAPE)
    with torch.no_grad():
        assert (small(x) - model(x)).abs().max() <= 1e-5
    compact_counts = count_model(small, SHAPE)
    assert compact_counts["macs"]["dense"] == counts["macs"]["pruned"]
    assert compact_counts["params"]["dense"] == counts["params"]["pruned"]
    for layer in layers:
        assert small.get_submodule(layer.conv).out_channels == int(keep[layer.conv].sum())


def test_prunable_layers_of_resnet_are_block_internal():
    layers = prunable_layers(build_cnn_model("resnet20"), SHAPE)
    assert [layer.conv for layer in layers] == [f"layers.{i}.conv1" for i in range(9)]
    assert all(layer.consumers == (layer.conv.replace("conv1", "conv2"),) for layer in layers)
    vgg = prunable_layers(build_cnn_model("vgg16_bn"), SHAPE)
    assert len(vgg) == 13 and vgg[-1].consumers == ("classifier.0",)


def test_saved_compact_model_rebuilds_without_pickles(tmp_path):
    model = calibrated("resnet20")
    layers = prunable_layers(model, SHAPE)
    keep = keep_for_fractions(score_layers(model, layers, l1), {layer.conv: 0.5 for layer in layers})
    ChannelMasks(channel_engine(model, layers, keep), model, layers).apply()
    small = remove_channels(copy.deepcopy(model), keep, SHAPE).eval()
    save_compact(tmp_path, small, architecture("resnet20", small, layers, num_classes=10))
    state = torch.load(tmp_path / "compact.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    loaded = load_compact(tmp_path, SHAPE)
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.equal(loaded(x), small(x))
