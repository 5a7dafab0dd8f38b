"""Early-bird stop of CNN pre-training: known masks, a stop at a known epoch, the prune flow."""
import json

import pytest
import torch

from cnn_bridge.compact import prunable_layers
from cnn_bridge.data import load_digits
from cnn_bridge.models import DigitsConvNet
from cnn_bridge.pretrain_early_bird import (PretrainMonitor, WatchedMask, bn_scaling_masks, magnitude_element_masks,
                                            relu_region_codes)
from cnn_bridge.train import CNNTrainConfig, train_cnn
from gnnprune.masks import EarlyBirdConfig

T, F = True, False


def _net(width=2):
    torch.manual_seed(0)
    return DigitsConvNet(num_classes=10, width=width)


def test_bn_scaling_masks_keep_the_largest_gammas_of_each_prunable_layer():
    model = _net()
    layers = prunable_layers(model, (1, 8, 8))
    with torch.no_grad():
        for layer in layers:
            bn = model.get_submodule(layer.bn)
            bn.weight.copy_(torch.tensor([-3.0, 1.0, 2.0, -0.5][: bn.weight.numel()]))
    expected = {2: [T, F], 4: [T, F, T, F]}
    masks = bn_scaling_masks(model, layers, fraction=0.5)
    assert masks.tolist() == [v for layer in layers for v in expected[model.get_submodule(layer.bn).weight.numel()]]


def test_element_masks_keep_the_largest_weights_of_every_layer_ties_by_index():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, -2.0], [1.0, 1.0]]))
        model[1].weight.copy_(torch.tensor([[5.0, -0.2]]))
    assert magnitude_element_masks(model, 0.5).tolist() == [F, T, T, F, T, F]


def test_region_codes_are_the_signs_of_every_batch_norm_output():
    model = _net()
    images = torch.randn(3, 1, 8, 8)
    codes = relu_region_codes(model, images)
    assert codes.dtype == torch.bool
    assert codes.numel() == 3 * (2 * 64 + 4 * 64 + 4 * 16)  # bn1, bn2 at 8x8; bn3 after the pool, 4x4
    assert model.training  # left as it was


@pytest.mark.parametrize("min_epochs, fired_epoch", [(0, 1), (4, 3)])
def test_pretraining_stops_after_the_epoch_the_monitor_fires(min_epochs, fired_epoch):
    data = load_digits().subset(200, 50)
    model = _net()
    layers = prunable_layers(model, (1, 8, 8))
    monitor = PretrainMonitor(EarlyBirdConfig(window=2, threshold=1.0, min_epochs=min_epochs),
                              [WatchedMask.CHANNELS, WatchedMask.ELEMENTS], layers, fraction=0.5)
    result = train_cnn(model, data, CNNTrainConfig(epochs=6, batch_size=50, augment=False), progress=False,
                       stop_after=monitor)
    # the window fills after epoch 1 and a threshold of 1 always holds; a floor of 4 epochs waits for epoch 3
    assert result["epochs_run"] == fired_epoch + 1
    record = monitor.record(6)
    assert (record["fired_epoch"], record["epochs_saved"], record["watch"]) == (
        fired_epoch, 6 - fired_epoch - 1, ["channels", "elements"])


def test_region_codes_need_a_probe():
    with pytest.raises(ValueError, match="need a probe batch"):
        PretrainMonitor(EarlyBirdConfig(), [WatchedMask.REGIONS], [], fraction=0.5)


def test_cli_prune_records_the_early_bird_of_pretraining(tmp_path):
    from gnnprune.cli import main

    out = tmp_path / "run"
    assert main(["cnn", "prune", "--model", "convnet", "--dataset", "digits", "--criterion", "l1", "--fraction", "0.5",
                 "--pretrain-epochs", "6", "--pretrain-lr", "0.05", "--finetune-epochs", "1", "--batch-size", "64",
                 "--no-augment", "--latency-repeats", "1", "--no-progress", "--train-subset", "300",
                 "--early-bird-window", "2", "--early-bird-threshold", "1", "--early-bird-watch", "channels,regions",
                 "--precision", "bf16", "--channels-last", "--out", str(out)]) == 0
    record = json.loads((out / "metrics.json").read_text())
    for phase in ("pretrain", "finetune"):
        assert (record["config"][phase]["precision"], record["config"][phase]["channels_last"]) == ("bf16", True)
    early_bird = record["pretrain"]["early_bird"]
    assert (early_bird["fired_epoch"], early_bird["epochs_saved"], record["pretrain"]["epochs_run"]) == (1, 4, 2)
    assert early_bird["watch"] == ["channels", "regions"]
    assert sorted(early_bird["distances"][0]) == ["channels", "epoch", "regions"]
