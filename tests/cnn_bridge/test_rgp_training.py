import json

import pytest

from cnn_bridge.adapters import WeightMasks
from cnn_bridge.data import load_digits
from cnn_bridge.experiment import RGPRunConfig, run_rgp
from cnn_bridge.rgp import RGPConfig
from cnn_bridge.train import CNNTrainConfig, learning_rate
from gnnprune.cli import main
from gnnprune.io import safe_torch_load
from gnnprune.masks import MaskEngine

DIGITS_TRAIN = CNNTrainConfig(epochs=8, batch_size=64, lr=0.05, augment=False)


def test_learning_rate_schedule():
    assert learning_rate(0, 100, 0.1) == pytest.approx(0.1)
    assert learning_rate(50, 100, 0.1) == pytest.approx(0.05)
    assert learning_rate(100, 100, 0.1) == pytest.approx(0.0)
    assert learning_rate(0, 100, 0.1, warmup=10) == pytest.approx(0.01)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.mark.parametrize("mask,floor", [("dense", 0.93), ("rgp", 0.9), ("random-element", 0.9)])
def test_digits_end_to_end(digits, tmp_path, mask, floor):
    config = RGPRunConfig(model="convnet", mask=mask, dataset="digits", rgp=RGPConfig(groups=8, density=0.5),
                          train=DIGITS_TRAIN)
    record = run_rgp(config, digits, tmp_path, progress=False)
    assert record["status"] == "done" and record["test_accuracy"] >= floor
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test_accuracy"] == record["test_accuracy"]
    engine = MaskEngine.from_state_dict(safe_torch_load(tmp_path / "masks.pt"))
    if mask == "dense":
        assert len(engine) == 0 and record["counts"]["macs"]["ratio"] == 1.0
        return
    assert len(engine) == 2  # conv2, conv3; conv1 and fc stay dense
    assert record["density"]["pruned_layers"] == 0.5
    model_state = safe_torch_load(tmp_path / "model.pt")
    for name, mask_tensor in WeightMasks(engine, _model_with(model_state)).weight_masks().items():
        assert (model_state[f"{name}.weight"][~mask_tensor] == 0).all()
    assert record["counts"]["macs"]["pruned"] < record["counts"]["macs"]["dense"]


def _model_with(state):
    from cnn_bridge.models import build_cnn_model

    model = build_cnn_model("convnet")
    model.load_state_dict(state)
    return model


def test_cli_rgp_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["cnn", "rgp", "--model", "convnet", "--dataset", "digits", "--groups", "8", "--degree", "4",
            "--epochs", "2", "--no-augment", "--lr", "0.05", "--batch-size", "64", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["rgp"]["density"] == 0.5
    assert [(layer["n"], layer["k"]) for layer in metrics["layers"]] == [(8, 4), (8, 4)]
    assert all(layer["aspl_after"] <= layer["aspl_before"] for layer in metrics["layers"])
    assert {"test_accuracy", "train_time_s", "mask_time_s", "counts"} <= set(metrics)
    assert "wrote" in capsys.readouterr().out
    assert main(argv) == 2  # never overwrite a run folder
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--model", "foo"], "unknown model 'foo'"),
    (["--degree", "8", "--groups", "8"], "1 <= k < n"),
    (["--degree", "3", "--groups", "7"], "k * n must be even"),
    (["--groups", "64"], "groups 64 > channels"),
    (["--mask", "nope"], "unknown mask 'nope'"),
    (["--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--density", "1"], "density must be in (0, 1)"),
    (["--degree", "4", "--density", "0.5"], "not allowed with argument"),
])
def test_cli_bad_input_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    base = ["cnn", "rgp", "--model", "convnet", "--dataset", "digits", "--groups", "8", "--out", str(out)]
    try:
        code = main(base + args)
    except SystemExit as exit:
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()
