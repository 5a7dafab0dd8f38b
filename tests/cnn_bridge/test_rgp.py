import pytest
import torch

from cnn_bridge.adapters import weight_mask
from cnn_bridge.models import build_cnn_model
from cnn_bridge.rgp import (RGPConfig, check_groups, layer_degree, prunable_convs, random_element_masks,
                            rgp_masks)
from gnnprune.masks import MaskEngine, SiteKind


@pytest.mark.parametrize("n,density,k", [(16, 0.5, 8), (64, 0.25, 16), (32, 0.25, 8), (5, 0.5, 2),
                                         (9, 0.35, 2), (4, 0.01, 2), (8, 0.99, 7), (2, 0.5, 1)])
def test_layer_degree(n, density, k):
    assert layer_degree(n, density) == k


def test_degree_maps_to_density():
    assert RGPConfig.from_degree(64, 16).density == 0.25
    with pytest.raises(ValueError, match="1 <= k < n"):
        RGPConfig.from_degree(64, 64)
    with pytest.raises(ValueError, match="even"):
        RGPConfig.from_degree(7, 3)
    with pytest.raises(ValueError, match="density"):
        RGPConfig(density=1.0)


def test_resnet20_rgp_masks_at_density_half():
    model, engine = build_cnn_model("resnet20"), MaskEngine()
    layers = rgp_masks(model, engine, RGPConfig(groups=64, density=0.5, swaps=200, seed=0))
    names = [name for name, _ in prunable_convs(model)]
    assert len(layers) == 18 and [layer.layer for layer in layers] == names
    assert "conv1.weight" not in engine and "fc.weight" not in engine  # first conv and classifier dense
    for layer, site in zip(layers, engine):
        assert site.kind == SiteKind.BLOCK and site.mask.shape == (layer.n, layer.n)
        assert layer.n == min(64, layer.c_in, layer.c_out) and layer.k == layer.n // 2
        assert (site.mask.sum(0) == layer.k).all() and (site.mask.sum(1) == layer.k).all()
        assert layer.density == 0.5 and weight_mask(site).float().mean() == 0.5
        assert layer.aspl_after <= layer.aspl_before
    assert {(layer.n, layer.k) for layer in layers} == {(16, 8), (32, 16), (64, 32)}


def test_rgp_is_deterministic_per_seed():
    masks = []
    for seed in (0, 0, 1):
        engine = MaskEngine()
        rgp_masks(build_cnn_model("resnet20"), engine, RGPConfig(groups=16, density=0.25, swaps=50, seed=seed))
        masks.append(torch.cat([s.mask.flatten() for s in engine]))
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])


def test_resnet50_mask_generation():
    model, engine = build_cnn_model("resnet50"), MaskEngine()
    layers = rgp_masks(model, engine, RGPConfig(groups=64, density=0.25, swaps=20))
    assert len(layers) == 52  # 53 convs (16 blocks x 3 + 4 projections + stem), stem dense
    assert all(layer.n == 64 and layer.k == 16 and layer.density == 0.25 for layer in layers)


def test_groups_larger_than_channels():
    with pytest.raises(ValueError, match="groups 128 > channels"):
        check_groups(build_cnn_model("resnet20"), 128)


def test_random_element_masks_keep_the_same_count():
    model, engine = build_cnn_model("convnet"), MaskEngine()
    random_element_masks(model, engine, {"conv2": 2304, "conv3": 100}, seed=0)
    assert engine.site("conv2.weight").live == 2304 and engine.site("conv3.weight").live == 100
    assert engine.site("conv2.weight").kind == SiteKind.WEIGHT


def test_density_for_mac_reduction_hits_the_target():
    from cnn_bridge.counting import count_model
    from cnn_bridge.models import build_cnn_model
    from cnn_bridge.rgp import density_for_mac_reduction

    model = build_cnn_model("resnet20")
    density = density_for_mac_reduction(model, (3, 32, 32), 0.5)
    convs = prunable_convs(model)
    dense = count_model(model, (3, 32, 32))["macs"]["dense"]
    assert len(convs) == 18  # 3 stages x 3 blocks x 2 convs, outputs 32x32, 16x16, 8x8
    prunable = sum(conv.weight.numel() * positions for (_, conv), positions in zip(convs, [1024] * 6 + [256] * 6 + [64] * 6))
    # the first conv (3 -> 16 at 32x32) and the classifier (64 -> 10) stay dense
    assert dense - prunable == 3 * 16 * 9 * 1024 + 640
    assert density * prunable + (dense - prunable) == pytest.approx(0.5 * dense)
    with pytest.raises(ValueError, match="outside"):
        density_for_mac_reduction(model, (3, 32, 32), 0.999)
