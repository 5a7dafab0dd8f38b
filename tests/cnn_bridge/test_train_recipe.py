"""The CPU training recipe: schedules, bf16 autocast, channels-last, exact resume, ``cnn train``."""
import dataclasses
import json

import pytest
import torch

from cnn_bridge.data import load_digits
from cnn_bridge.models import build_cnn_model
from cnn_bridge.train import CHECKPOINT_FILE, CNNTrainConfig, Precision, Schedule, learning_rate, train_cnn
from gnnprune.cli import main
from gnnprune.io import safe_torch_load

SMALL = CNNTrainConfig(epochs=3, batch_size=100, lr=0.05, augment=True, eval_every_epoch=True)


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def digits():
    return load_digits().subset(train=400, test=200)


def _model(seed=0):
    torch.manual_seed(seed)
    return build_cnn_model("convnet", num_classes=10, in_channels=1)


def test_one_cycle_schedule():
    # rise over 30 of 100 steps from 0.1 / 25 to 0.1, then linear to 0
    assert learning_rate(0, 100, 0.1, schedule=Schedule.ONE_CYCLE) == pytest.approx(0.004)
    assert learning_rate(15, 100, 0.1, schedule=Schedule.ONE_CYCLE) == pytest.approx(0.052)
    assert learning_rate(30, 100, 0.1, schedule=Schedule.ONE_CYCLE) == pytest.approx(0.1)
    assert learning_rate(65, 100, 0.1, schedule=Schedule.ONE_CYCLE) == pytest.approx(0.05)
    assert learning_rate(100, 100, 0.1, schedule=Schedule.ONE_CYCLE) == pytest.approx(0.0)
    assert learning_rate(5, 100, 0.1, warmup=10, schedule=Schedule.ONE_CYCLE) == pytest.approx(0.004 + 0.096 / 2)


def test_config_checks_and_steps():
    assert CNNTrainConfig(epochs=3, batch_size=100).total_steps(450) == 15
    assert CNNTrainConfig(epochs=3, batch_size=100, max_steps=7).total_steps(450) == 7
    assert CNNTrainConfig(precision="bf16").precision is Precision.BF16
    for bad in ({"label_smoothing": 1.0}, {"max_steps": 0}, {"warmup_steps": -1}, {"cutout": -1}):
        with pytest.raises(ValueError):
            CNNTrainConfig(**bad)
    with pytest.raises(ValueError):
        CNNTrainConfig(precision="fp16")


def test_resume_continues_exactly(digits, tmp_path):
    whole = _model()
    straight = train_cnn(whole, digits, SMALL, progress=False)

    def stop_after_first(entry):
        if entry["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train_cnn(_model(), digits, SMALL, progress=False, checkpoint_dir=tmp_path, on_epoch=stop_after_first)
    assert safe_torch_load(tmp_path / CHECKPOINT_FILE)["epoch"] == 1
    resumed_model = _model(seed=1)  # other initial weights: the checkpoint must replace them
    resumed = train_cnn(resumed_model, digits, SMALL, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert [e["epoch"] for e in resumed["history"]] == [1, 2, 3] and resumed["steps"] == straight["steps"] == 12
    for a, b in zip(whole.state_dict().values(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert resumed["test_accuracy"] == pytest.approx(straight["test_accuracy"])
    assert [e["train_loss"] for e in resumed["history"]] == pytest.approx([e["train_loss"] for e in straight["history"]])


def test_resume_refuses_other_settings(digits, tmp_path):
    train_cnn(_model(), digits, SMALL, progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="other settings \\(lr\\)"):
        train_cnn(_model(), digits, CNNTrainConfig(epochs=3, batch_size=100, lr=0.1, eval_every_epoch=True),
                  progress=False, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="other settings \\(cutout\\)"):
        train_cnn(_model(), digits, dataclasses.replace(SMALL, cutout=4), progress=False, checkpoint_dir=tmp_path,
                  resume=True)
    with pytest.raises(ValueError, match="nothing to resume"):
        train_cnn(_model(), digits, SMALL, progress=False, checkpoint_dir=tmp_path / "empty", resume=True)


def test_a_checkpoint_from_before_a_setting_existed_resumes_at_its_default(digits, tmp_path):
    train_cnn(_model(), digits, SMALL, progress=False, checkpoint_dir=tmp_path, stop_after=lambda _, epoch: epoch == 1)
    saved = safe_torch_load(tmp_path / CHECKPOINT_FILE)
    del saved["config"]["cutout"]  # as written before cutout was a setting
    torch.save(saved, tmp_path / CHECKPOINT_FILE)
    resumed = train_cnn(_model(), digits, SMALL, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert [e["epoch"] for e in resumed["history"]] == [1, 2, 3]
    with pytest.raises(ValueError, match="other settings \\(cutout\\)"):
        train_cnn(_model(), digits, dataclasses.replace(SMALL, cutout=4), progress=False, checkpoint_dir=tmp_path,
                  resume=True)


def test_bf16_channels_last_keeps_fp32_weights_and_learns(digits):
    model = _model()
    config = CNNTrainConfig(epochs=8, batch_size=64, lr=0.05, augment=False, precision=Precision.BF16,
                            channels_last=True)
    result = train_cnn(model, load_digits(), config, progress=False)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.is_contiguous() for p in model.parameters())  # back to the default layout afterwards
    assert result["test_accuracy"] >= 0.9


def test_max_steps_stops_early(digits):
    result = train_cnn(_model(), digits, CNNTrainConfig(epochs=5, batch_size=100, max_steps=6), progress=False)
    assert result["steps"] == 6 and len(result["history"]) == 2


def test_cnn_train_command_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["cnn", "train", "--model", "convnet", "--dataset", "digits", "--epochs", "2", "--batch-size", "200",
            "--precision", "bf16", "--schedule", "one-cycle", "--warmup-epochs", "0", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    history = json.loads((out / "history.json").read_text())["history"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in history] == [1, 2] and metrics["status"] == "done"
    assert metrics["test_accuracy"] == history[-1]["test_accuracy"]
    assert set(safe_torch_load(out / "model.pt")) == set(_model().state_dict())
    assert main(argv + ["--resume"]) == 0  # already finished: nothing more to train
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    capsys.readouterr()
    assert main(argv) == 2  # the run folder is not empty
    assert main(argv[:7] + ["3"] + argv[8:] + ["--resume"]) == 2  # another epoch count: another schedule
    err = capsys.readouterr().err.strip().splitlines()
    assert "already exists" in err[0] and "written for 2 epochs, not 3" in err[-1]
    assert main(argv[:-1] + [str(tmp_path / "none"), "--resume"]) == 2
    assert "none/checkpoint.pt does not exist" in capsys.readouterr().err
    cut = tmp_path / "cut"
    assert main(argv[:-1] + [str(cut), "--cutout", "3"]) == 0
    assert json.loads((cut / "history.json").read_text())["config"]["train"]["cutout"] == 3
    with pytest.raises(SystemExit) as exit_:
        main(argv[:-1] + [str(tmp_path / "bad"), "--cutout", "-1"])
    assert exit_.value.code == 2 and "argument --cutout: must be >= 0, got -1" in capsys.readouterr().err


def test_cnn_train_init_from_starts_at_the_given_weights(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    argv = ["cnn", "train", "--model", "convnet", "--dataset", "digits", "--epochs", "2", "--batch-size", "200",
            "--warmup-epochs", "0", "--no-progress", "--out"]
    assert main(argv + [str(first)]) == 0
    trained = json.loads((first / "history.json").read_text())["history"]
    # a further cycle at a small learning rate starts where the first run ended, not at a random model
    assert main(argv + [str(second), "--lr", "0.001", "--init-from", str(first / "model.pt")]) == 0
    again = json.loads((second / "history.json").read_text())
    assert again["config"]["init_from"] == str(first / "model.pt")
    assert again["history"][0]["train_loss"] < trained[0]["train_loss"]
    assert again["history"][0]["test_accuracy"] >= trained[-1]["test_accuracy"] - 0.05
    assert main(argv + [str(tmp_path / "third"), "--init-from", str(first / CHECKPOINT_FILE)]) == 0  # a checkpoint too
