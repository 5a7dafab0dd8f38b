"""The pruning flow: budgets, masks through training, and one end-to-end run on 8x8 digits."""
import json

import pytest
import torch

from cnn_bridge.compact import load_compact, prunable_layers
from cnn_bridge.counting import count_model
from cnn_bridge.criteria.sensitivity import fractions_within
from cnn_bridge.data import load_digits
from cnn_bridge.models import build_cnn_model
from cnn_bridge.prune_flow import (ChannelMasks, MacModel, PruneRunConfig, channel_engine, keep_lowest_pruned,
                                   run_prune, sensitivity_fractions, uniform_fraction_for)
from cnn_bridge.train import CNNTrainConfig, train_cnn

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


def test_sensitivity_fractions_spare_the_sensitive_layer():
    model = build_cnn_model("convnet", in_channels=1)
    layers = prunable_layers(model, (1, 8, 8))
    macs = MacModel.of(model, layers, (1, 8, 8))
    drops = {"conv1": [0.5, 0.6, 0.7], "conv2": [0.0, 0.0, 0.01], "conv3": [0.0, 0.01, 0.02]}
    fractions, tolerance = sensitivity_fractions(macs, drops, (0.25, 0.5, 0.75), 0.4)
    assert fractions["conv1"] == 0.0
    assert macs.macs(macs.kept_at(fractions)) <= 0.6 * macs.macs()
    # the tolerance rule at the returned tolerance prunes at least as much
    assert all(fractions_within(drops, (0.25, 0.5, 0.75), tolerance)[n] >= f for n, f in fractions.items())


def test_sensitivity_fractions_spread_equal_drops():
    model = build_cnn_model("convnet", in_channels=1)
    macs = MacModel.of(model, prunable_layers(model, (1, 8, 8)), (1, 8, 8))
    drops = {name: [0.0, 0.0, 0.0] for name in ("conv1", "conv2", "conv3")}
    fractions, tolerance = sensitivity_fractions(macs, drops, (0.25, 0.5, 0.75), 0.3)
    assert tolerance == 0.0 and max(fractions.values()) <= 0.5
    with pytest.raises(ValueError, match="cannot reach"):
        sensitivity_fractions(macs, drops, (0.25,), 0.9)


def test_dead_channels_stay_zero_through_training():
    data = load_digits().subset(200, 50)
    model = build_cnn_model("convnet", in_channels=1)
    layers = prunable_layers(model, (1, 8, 8))
    keep = {layer.conv: torch.arange(model.get_submodule(layer.conv).out_channels) % 2 == 0 for layer in layers}
    masks = ChannelMasks(channel_engine(model, layers, keep), model, layers)
    train_cnn(model, data, CNNTrainConfig(epochs=1, batch_size=50, augment=False), masks, progress=False)
    for layer in layers:
        dead = ~keep[layer.conv]
        assert model.get_submodule(layer.conv).weight[dead].abs().sum() == 0
        assert model.get_submodule(layer.bn).weight[dead].abs().sum() == 0
        assert model.get_submodule(layer.bn).bias[dead].abs().sum() == 0


def test_config_rejects_bad_budgets():
    with pytest.raises(ValueError, match="exactly one"):
        PruneRunConfig(mac_reduction=0.5, fraction=0.5)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        PruneRunConfig(mac_reduction=1.5)
    with pytest.raises(ValueError, match="sensitivity"):
        PruneRunConfig(criterion="sensitivity", mac_reduction=None, fraction=0.3)
    with pytest.raises(ValueError, match="choose one of"):
        PruneRunConfig(criterion="random")


@pytest.mark.parametrize("criterion", ["chip", "central"])
def test_end_to_end_on_digits(tmp_path, criterion):
    config = PruneRunConfig(model="convnet", dataset="digits", criterion=criterion, mac_reduction=0.5,
                            pretrain=CNNTrainConfig(epochs=8, lr=0.05, batch_size=64, augment=False),
                            finetune=CNNTrainConfig(epochs=2, lr=0.01, batch_size=64, augment=False),
                            latency_repeats=2)
    data = load_digits()
    record = run_prune(config, data, tmp_path, progress=False)
    assert record["accuracy"]["dense"] >= 0.9
    assert record["accuracy"]["masked_after_finetune"] >= 0.9
    assert record["counts"]["macs"]["ratio"] <= 0.5
    assert record["compact_counts"]["macs"] == record["counts"]["macs"]["pruned"]
    assert record["compact_max_abs_diff"] <= 1e-5
    # the compact model computes the masked one's outputs up to rounding (checked above): only a test
    # image whose two top logits agree to within that rounding can change its prediction
    assert abs(record["accuracy"]["compact"] - record["accuracy"]["masked_after_finetune"]) <= 1 / len(data.test_y)
    assert set(record["latency_s"]) == {"batch_1", "batch_64"}
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["status"] == "done"
    small = load_compact(tmp_path, (1, 8, 8))
    assert count_model(small, (1, 8, 8))["macs"]["dense"] == record["compact_counts"]["macs"]


def test_cli_prune_writes_compact_model(tmp_path, capsys):
    from gnnprune.cli import main

    out = tmp_path / "run"
    code = main(["cnn", "prune", "--model", "convnet", "--dataset", "digits", "--criterion", "l1", "--fraction", "0.5",
                 "--pretrain-epochs", "4", "--pretrain-lr", "0.05", "--finetune-epochs", "1", "--batch-size", "64",
                 "--no-augment", "--latency-repeats", "1", "--no-progress", "--out", str(out)])
    assert code == 0
    assert {"metrics.json", "masks.pt", "compact.pt", "architecture.json"} <= {p.name for p in out.iterdir()}
    channels = json.loads((out / "architecture.json").read_text())["channels"]
    assert channels == {"conv1": 8, "conv2": 16, "conv3": 16}


@pytest.mark.parametrize("argv, message", [
    (["--criterion", "magic"], "choose one of l1"),
    (["--checkpoint", "missing.pt"], "missing.pt"),
])
def test_cli_prune_bad_input_exits_2(tmp_path, capsys, argv, message):
    from gnnprune.cli import main

    code = main(["cnn", "prune", "--model", "convnet", "--dataset", "digits", "--out", str(tmp_path / "run"), *argv])
    assert code == 2
    assert message in capsys.readouterr().err


def test_collected_features_are_post_activation_maps():
    from cnn_bridge.prune_flow import collect_features

    torch.manual_seed(0)
    model = build_cnn_model("vgg16_bn").eval()
    layers = prunable_layers(model, SHAPE)[:2]
    x = torch.randn(3, *SHAPE)
    features = collect_features(model, layers, [x[:2], x[2:]])
    with torch.no_grad():
        first = torch.relu(model.features[1](model.features[0](x)))
    assert features["features.0"].shape == (3, 64, 32, 32)
    assert torch.allclose(features["features.0"], first, atol=1e-5)
    assert features["features.3"].min() >= 0
