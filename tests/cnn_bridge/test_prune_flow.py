"""The pruning run: its configuration, one end-to-end run on 8x8 digits, and the command line."""
import json

import pytest

from cnn_bridge.compact import load_compact
from cnn_bridge.counting import count_model
from cnn_bridge.data import load_digits
from cnn_bridge.prune_flow import PruneFlow, PruneRunConfig, run_prune
from cnn_bridge.train import CNNTrainConfig


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


def test_config_rejects_bad_technique_combinations():
    with pytest.raises(ValueError, match="train subset"):
        PruneRunConfig(allocation="snf")
    with pytest.raises(ValueError, match="cannot use snf"):
        PruneRunConfig(criterion="sensitivity", allocation="snf", train_subset=100)
    with pytest.raises(ValueError):
        PruneRunConfig(flow="magic")
    assert PruneRunConfig(flow="asc").flow is PruneFlow.ASC


@pytest.mark.parametrize("technique", [{"flow": "asc"}, {"criterion": "cap"},
                                       {"criterion": "l1", "allocation": "snf", "train_subset": 1000}])
def test_techniques_end_to_end_on_digits(technique):
    config = PruneRunConfig(model="convnet", dataset="digits", mac_reduction=0.5,
                            pretrain=CNNTrainConfig(epochs=8, lr=0.05, batch_size=64, augment=False),
                            finetune=CNNTrainConfig(epochs=2, lr=0.01, batch_size=64, augment=False),
                            latency_repeats=1, latency_batches=(1,), **technique)
    record = run_prune(config, load_digits(), None, progress=False)
    assert record["accuracy"]["masked_after_finetune"] >= 0.9
    assert 0.45 <= record["counts"]["macs"]["ratio"] <= 0.5
    assert record["compact_counts"]["macs"] == record["counts"]["macs"]["pruned"]
    assert record["compact_max_abs_diff"] <= 1e-5
    if "flow" in technique:  # the merge after the tied phase leaves the outputs as they were
        assert record["asc"]["merge_max_abs_diff"] <= 1e-5
    if "allocation" in technique:
        assert record["snf"]["loss"] <= record["snf"]["uniform_loss"]


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
    (["--allocation", "snf"], "needs a MAC reduction and a train subset"),
    (["--allocation", "snf", "--criterion", "sensitivity", "--train-subset", "500"], "cannot use snf"),
    (["--early-bird-watch", "channels,bn"], "--early-bird-watch: unknown part in 'channels,bn'; choose from channels, "
                                            "elements, regions"),
    (["--checkpoint", "missing.pt", "--early-bird-window", "5"],
     "--early-bird-window / --early-bird-threshold / --early-bird-min-epochs watch pre-training: drop --checkpoint"),
])
def test_cli_prune_bad_input_exits_2(tmp_path, capsys, argv, message):
    from gnnprune.cli import main

    code = main(["cnn", "prune", "--model", "convnet", "--dataset", "digits", "--out", str(tmp_path / "run"), *argv])
    assert code == 2
    assert message in capsys.readouterr().err


def test_cli_prune_rejects_a_negative_early_bird_floor(tmp_path, capsys):
    from gnnprune.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["cnn", "prune", "--model", "convnet", "--dataset", "digits", "--out", str(tmp_path / "run"),
              "--early-bird-min-epochs", "-1"])
    assert exit_.value.code == 2
    assert "argument --early-bird-min-epochs: must be >= 0, got -1" in capsys.readouterr().err
