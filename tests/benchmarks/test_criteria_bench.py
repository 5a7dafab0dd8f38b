"""benchmarks/criteria.py at tiny sizes: from a checkpoint, criteria and mask methods, one budget, resume."""
import json

import pytest
import torch

from benchmarks import criteria
from cnn_bridge.data import CIFAR10_MEAN, CIFAR10_STD, ImageData
from cnn_bridge.models import build_cnn_model


@pytest.fixture
def tiny_cifar(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    images = lambda n: torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)  # noqa: E731
    labels = lambda n: torch.arange(n) % 10  # noqa: E731
    data = ImageData(images(60), labels(60), images(40), labels(40), CIFAR10_MEAN, CIFAR10_STD, 10, "tiny")
    monkeypatch.setattr("cnn_bridge.data.load_cifar10", lambda root=None, progress=True: data)
    torch.set_num_threads(1)
    return data


def test_runs_every_method_from_a_checkpoint_with_one_budget_and_resumes(tiny_cifar, tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "dense.pt"
    torch.save(build_cnn_model("resnet20").state_dict(), checkpoint)
    out = tmp_path / "bench"
    argv = ["--model", "resnet20", "--checkpoint", str(checkpoint), "--finetune-steps", "2", "--batch-size", "20",
            "--precision", "bf16", "--feature-images", "8", "--latency-repeats", "1", "--seeds", "0",
            "--criteria", "l1,fsm", "--masks", "rgp,random-element", "--out", str(out)]
    assert criteria.main(argv) == 0
    saved = json.loads((out / "criteria.json").read_text())
    assert [r["method"] for r in saved["runs"]] == ["l1", "fsm", "rgp", "random-element"]
    dense = {r["accuracy"]["dense"] for r in saved["runs"]}
    assert len(dense) == 1  # the same checkpoint for every method
    for run in saved["runs"]:
        assert run["finetune"]["steps"] == 2
        assert abs(run["counts"]["macs"]["ratio"] - 0.5) < 0.02, run["method"]
    for row in saved["rows"]:
        if row["kind"] == "criterion":
            assert row["max_abs_diff"] < 1e-5 and len(row["speedup_64"]) == 1
        else:
            assert row["max_abs_diff"] is None
    table = (out / "criteria.md").read_text()
    assert "| rgp |" in table and "2 steps" in table and (out / "criteria.png").exists()

    with pytest.raises(SystemExit):  # neither --resume nor --overwrite
        criteria.parse_args(argv)
    assert criteria.main(argv + ["--seeds", "0,1", "--criteria", "l1", "--masks", "", "--resume"]) == 0
    again = json.loads((out / "criteria.json").read_text())
    assert [(r["method"], r["seed"]) for r in again["runs"]] == [
        ("l1", 0), ("fsm", 0), ("rgp", 0), ("random-element", 0), ("l1", 1)]
    assert again["runs"][0] == saved["runs"][0]


def test_rejects_unknown_methods_and_a_missing_checkpoint(tmp_path):
    for bad in (["--criteria", "nope"], ["--masks", "dense"], ["--finetune-steps", "0"],
                ["--checkpoint", str(tmp_path / "none.pt")]):
        with pytest.raises(SystemExit):
            criteria.parse_args(bad + ["--out", str(tmp_path)])


def test_time_budget_stops_starting_runs(tiny_cifar, tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "dense.pt"
    torch.save(build_cnn_model("resnet20").state_dict(), checkpoint)
    out = tmp_path / "bench"
    assert criteria.main(["--checkpoint", str(checkpoint), "--finetune-steps", "1", "--batch-size", "20",
                          "--latency-repeats", "1", "--seeds", "0,1", "--criteria", "l1,fsm", "--masks", "",
                          "--time-budget", "0.001", "--out", str(out)]) == 0
    saved = json.loads((out / "criteria.json").read_text())
    assert [r["method"] for r in saved["runs"]] == ["l1"]  # the first run always starts
    assert saved["not_run"] == [["fsm", 0], ["l1", 1], ["fsm", 1]]
    assert "Not run (time budget of 0 s reached): fsm seed 0, l1 seed 1, fsm seed 1." in (out / "criteria.md").read_text()
