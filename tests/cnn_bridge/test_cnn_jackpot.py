"""Lottery jackpots for CNNs: magnitude cut, score search with frozen weights, run folder."""
import json

import pytest
import torch
from torch import nn

from cnn_bridge.data import load_digits, normalise
from cnn_bridge.jackpot import JackpotRunConfig, magnitude_engine, run_jackpot, searched_layers
from cnn_bridge.models import build_cnn_model
from cnn_bridge.train import CNNTrainConfig, reestimate_batch_norm
from gnnprune.cli import main
from gnnprune.masks import kept_count


def _net():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 8),
                         nn.ReLU(), nn.Linear(8, 3))


def test_every_conv_and_linear_but_the_classifier_is_searched():
    assert searched_layers(_net()) == ["0", "4"]


def test_the_magnitude_cut_keeps_the_largest_weights_of_every_layer():
    net = _net()
    with torch.no_grad():
        net[0].weight.copy_(torch.arange(36, dtype=torch.float32).view(4, 1, 3, 3) - 17.5)
    engine = magnitude_engine(net, ["0"], 0.75)
    kept = engine.mask("0.weight").reshape(-1)
    assert int(kept.sum()) == kept_count(36, 0.75) == 9
    # |w| = 17.5, 16.5, 15.5, 14.5 at 0-3 and 32-35; of the tie at 13.5 (4 and 31) the lower index is pruned first
    assert kept.nonzero().view(-1).tolist() == [0, 1, 2, 3, 31, 32, 33, 34, 35]


def test_batch_norm_statistics_are_re_estimated_as_a_plain_average():
    net = nn.Sequential(nn.BatchNorm2d(1))
    images = torch.stack([torch.full((1, 2, 2), 10, dtype=torch.uint8), torch.full((1, 2, 2), 30, dtype=torch.uint8)])
    reestimate_batch_norm(net, (normalise(images[i:i + 1], (0.0,), (1.0,)) for i in range(len(images))))
    # batch 1 mean 10/255, batch 2 mean 30/255: cumulative average 20/255
    assert float(net[0].running_mean) == pytest.approx(20 / 255, rel=1e-5)
    assert net[0].momentum == 0.1


def test_run_keeps_every_parameter_bit_identical_and_every_layer_at_its_count(tmp_path):
    data = load_digits()
    config = JackpotRunConfig(model="convnet", dataset="digits", sparsity=0.8, search_epochs=2, batch_size=64,
                              pretrain=CNNTrainConfig(epochs=2, batch_size=64, augment=False), augment=False,
                              train_subset=400, test_subset=200)
    record = run_jackpot(config, data, tmp_path, progress=False)
    assert record["weights_unchanged"] is True
    assert record["search"]["steps"] == 2 * 7
    for name, layer in record["sparsity"]["per_layer"].items():
        assert layer["live"] == kept_count(layer["entries"], 0.8), name
    assert set(record["accuracy"]) == {"dense", "magnitude", "magnitude_bn_reestimated", "jackpot"}
    masks = torch.load(tmp_path / "masks.pt", weights_only=True)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    model = build_cnn_model("convnet", num_classes=10, in_channels=1)
    model.load_state_dict(state)
    for site, entry in masks.items():
        weight = model.get_submodule(entry["meta"]["module"]).weight
        assert bool((weight[~entry["mask"]] == 0).all()) and bool((weight[entry["mask"]] != 0).any())
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "done"


def test_cli_jackpot_from_a_checkpoint(tmp_path, capsys):
    model = build_cnn_model("convnet", num_classes=10, in_channels=1)
    torch.save(model.state_dict(), tmp_path / "dense.pt")
    assert main(["cnn", "jackpot", "--model", "convnet", "--dataset", "digits", "--checkpoint", str(tmp_path / "dense.pt"),
                 "--train-subset", "200", "--test-subset", "100", "--search-epochs", "1", "--no-augment",
                 "--finetune-epochs", "1", "--no-progress", "--out", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["pretrain"] == {"checkpoint": str(tmp_path / "dense.pt")}
    assert record["weights_unchanged"] is True and "jackpot_finetuned" in record["accuracy"]
    assert (tmp_path / "out" / "model-finetuned.pt").exists()
    assert "weights unchanged: True" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--sparsity", "1"], "density must be in (0, 1), got 1"),
    (["--checkpoint", "{tmp}/missing.pt"], "missing.pt"),
    (["--model", "nosuch"], "unknown model 'nosuch'"),
])
def test_cli_bad_input_is_one_line(tmp_path, capsys, extra, message):
    argv = ["cnn", "jackpot", "--dataset", "digits", "--model", "convnet", "--out", str(tmp_path / "out"),
            *[word.replace("{tmp}", str(tmp_path)) for word in extra]]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()
