import pytest
import torch
from torch import nn

from cnn_bridge.adapters import WeightMasks, group_sizes, register_weight_site, weight_mask
from gnnprune.masks import MaskEngine, SiteKind


class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, bias=True)
        self.fc = nn.Linear(3, 4)


def test_group_sizes():
    assert group_sizes(10, 4) == [3, 3, 2, 2]
    assert group_sizes(64, 16) == [4] * 16
    with pytest.raises(ValueError, match="groups"):
        group_sizes(4, 5)


def test_block_site_maps_onto_channel_group_blocks():
    model, engine = Two(), MaskEngine()
    block = torch.tensor([[True, False], [False, True]])
    site = register_weight_site(engine, model, "conv", SiteKind.BLOCK, (2, 2), block)
    assert site.name == "conv.weight" and engine.site("conv.weight") is site and site.kind == SiteKind.BLOCK
    full = weight_mask(site)
    assert full.shape == (6, 4, 3, 3)
    assert full[0:3, 0:2].all() and not full[0:3, 2:4].any()
    assert not full[3:6, 0:2].any() and full[3:6, 2:4].all()
    assert full.float().mean() == 0.5


def test_block_site_with_uneven_groups():
    model, engine = Two(), MaskEngine()
    block = torch.tensor([[True, False, False], [False, False, True]])  # out 6 -> [3, 3], in 4 -> [2, 1, 1]
    full = weight_mask(register_weight_site(engine, model, "conv", "block", (2, 3), block))
    assert full[0:3, 0:2].all() and not full[0:3, 2:].any()
    assert full[3:, 3].all() and not full[3:, :3].any()


def test_channel_site_zeroes_rows_and_bias():
    model, engine = Two(), MaskEngine()
    register_weight_site(engine, model, "fc", SiteKind.CHANNEL, mask=torch.tensor([True, False, True, True]))
    masks = WeightMasks(engine, model)
    masks.apply()
    assert (model.fc.weight[1] == 0).all() and model.fc.bias[1] == 0
    assert (model.fc.weight[[0, 2, 3]] != 0).all()


def test_element_masks_survive_sgd_with_momentum_and_weight_decay():
    torch.manual_seed(0)
    model, engine = Two(), MaskEngine()
    site = register_weight_site(engine, model, "conv", SiteKind.WEIGHT)
    engine.prune(site.name, 100, torch.rand(site.numel))
    masks = WeightMasks(engine, model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    masks.apply()
    for _ in range(3):
        loss = model.conv(torch.randn(2, 4, 5, 5)).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        masks.mask_gradients()
        assert (model.conv.weight.grad[~engine.mask("conv.weight")] == 0).all()
        opt.step()
        masks.apply()
    dead = ~engine.mask("conv.weight")
    assert int(dead.sum()) == 100
    assert (model.conv.weight[dead] == 0).all() and (model.conv.weight[~dead] != 0).all()
    assert masks.kept() == 216 - 100 and masks.total() == 216


def test_sites_round_trip_through_engine_state():
    model, engine = Two(), MaskEngine()
    register_weight_site(engine, model, "conv", SiteKind.BLOCK, (2, 2), torch.tensor([[True, False], [True, True]]))
    restored = MaskEngine.from_state_dict(engine.state_dict())
    assert torch.equal(weight_mask(restored.site("conv.weight")), weight_mask(engine.site("conv.weight")))


def test_bad_sites():
    model, engine = Two(), MaskEngine()
    with pytest.raises(TypeError, match="Conv2d and Linear"):
        register_weight_site(engine, nn.Sequential(nn.ReLU()), "0", SiteKind.WEIGHT)
    with pytest.raises(ValueError, match="groups"):
        register_weight_site(engine, model, "conv", SiteKind.BLOCK)
    with pytest.raises(ValueError, match="does not map"):
        register_weight_site(engine, model, "conv", SiteKind.EDGE)
