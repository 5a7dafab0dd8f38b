"""SNF: the searched allocation meets the MAC target exactly (no single channel fits any more) on
ResNet-56, the masked evaluation, and the held-out validation split."""
import copy

import pytest
import torch

from cnn_bridge.allocation import MacModel
from cnn_bridge.channel_masks import ChannelMasks, channel_engine
from cnn_bridge.channel_scores import score_layers
from cnn_bridge.compact import prunable_layers
from cnn_bridge.criteria import l1
from cnn_bridge.data import ImageData, load_digits, normalise
from cnn_bridge.models import build_cnn_model
from cnn_bridge.snf import SNFConfig, adaptive_bn_loss, counts_for_weights, masked_channels, snf_allocate


def test_allocation_meets_the_mac_target_exactly_on_resnet56():
    torch.manual_seed(0)
    model = build_cnn_model("resnet56")
    layers = prunable_layers(model, (3, 32, 32))
    macs = MacModel.of(model, layers, (3, 32, 32))
    names = list(macs.channels)
    scores = score_layers(model, layers, l1)
    # a stand-in validation loss that prefers keeping early layers: the search must move away from uniform
    preference = torch.linspace(1.0, 0.2, len(names), dtype=torch.float64)
    loss = lambda keep: float(sum(p * (1 - keep[n].double().mean()) for p, n in zip(preference, names)))  # noqa: E731
    keep, trace = snf_allocate(macs, scores, 0.5, loss, SNFConfig(population=6, generations=3, elites=2))
    target = 0.5 * macs.macs()
    kept = {n: int(keep[n].sum()) for n in names}
    assert kept == trace["kept"]
    assert macs.macs(kept) == trace["macs"] <= target
    for name, c in macs.channels.items():  # exact: not one more channel fits anywhere
        if kept[name] < c:
            assert macs.macs({**kept, name: kept[name] + 1}) > target
    assert trace["loss"] <= trace["uniform_loss"]
    assert trace["loss"] < trace["uniform_loss"]  # the preference is learnable, so the search improves on uniform
    # the masked model's exact structured count agrees with the MAC model
    masks = ChannelMasks(channel_engine(model, layers, keep), model, layers)
    assert masks.count((3, 32, 32))["macs"]["pruned"] == macs.macs(kept)
    # and every layer keeps its highest-scoring channels
    for name in names:
        assert scores[name][keep[name]].min() >= scores[name][~keep[name]].max()


def test_counts_for_unreachable_target_raise():
    model = build_cnn_model("convnet")
    layers = prunable_layers(model, (1, 8, 8))
    macs = MacModel.of(model, layers, (1, 8, 8))
    with pytest.raises(ValueError, match="one channel per layer"):
        counts_for_weights(macs, {n: 1.0 for n in macs.channels}, 0.001 * macs.macs())


def test_masked_evaluation_matches_channel_masks_and_restores_batch_norm():
    torch.manual_seed(0)
    model = build_cnn_model("convnet").eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.bias.data.uniform_(-0.5, 0.5)
    layers = prunable_layers(model, (1, 8, 8))
    keep = {layer.conv: torch.rand(model.get_submodule(layer.conv).out_channels) < 0.5 for layer in layers}
    for k in keep.values():
        k[0] = True
    x = torch.randn(4, 1, 8, 8)
    masked = copy.deepcopy(model)
    ChannelMasks(channel_engine(masked, layers, keep), masked, layers).apply()
    with torch.no_grad(), masked_channels(model, layers, keep):
        hooked = model(x)
    assert torch.allclose(hooked, masked(x), atol=1e-5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    labels = torch.randint(0, 10, (4,))
    loss = adaptive_bn_loss(model, layers, keep, [x], [(x, labels)])
    assert loss > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_held_out_images_lie_outside_the_training_subset():
    n = 200
    train_x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1)
    data = ImageData(train_x, torch.arange(n) % 4, train_x[:8], torch.arange(8) % 4, (0.0,), (1.0,), 4, "toy")
    subset = data.subset(120, None, seed=3)
    val_x, val_y = data.held_out(120, 40, seed=3)
    used, held = set(subset.train_x.view(-1).tolist()), set(val_x.view(-1).tolist())
    assert len(held) == 40 and not used & held
    assert torch.bincount(val_y).tolist() == [10, 10, 10, 10]
    with pytest.raises(ValueError, match="train subset"):
        data.held_out(None, 10)


def test_reestimated_batch_norm_statistics_average_the_batches():
    from cnn_bridge.train import reestimate_batch_norm

    bn = torch.nn.BatchNorm2d(2)
    model = torch.nn.Sequential(bn)
    first, second = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3) + 1.0
    reestimate_batch_norm(model, [first, second])
    expected = (first.mean((0, 2, 3)) + second.mean((0, 2, 3))) / 2
    assert torch.allclose(bn.running_mean, expected, atol=1e-6)
    assert bn.momentum == 0.1 and not model.training
