import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

from gnnprune.cli import main
from tests.conftest import REPO


def _cli(args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "gnnprune", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=600)


def test_cli_run_writes_every_file(tmp_path, cora):
    out = tmp_path / "run"
    code = main(["prune", "--dataset", "cora", "--weight-sparsity", "0.9", "--edge-sparsity", "0.5",
                 "--feature-sparsity", "0.5", "--epochs", "24", "--seeds", "0,1", "--hidden", "32",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "done"
    assert record["config"]["method"] == "cgp"
    assert record["summary"]["test"]["n"] == 2
    for seed in (0, 1):
        folder = out / f"seed-{seed}"
        metrics = json.loads((folder / "metrics.json").read_text())
        for key in ("dataset", "model", "seed", "config", "best_epoch", "val", "test", "sparsity", "macs",
                    "train_time_s", "inference_time_s"):
            assert key in metrics
        assert metrics["sparsity"]["kept_edges"] == 2639
        assert metrics["macs"]["pruned"] < metrics["macs"]["dense"]
        assert [layer["layer"] for layer in metrics["macs"]["per_layer"]] == ["convs.0", "convs.1"]
        state = torch.load(folder / "model.pt", weights_only=True)
        assert "convs.0.lin.weight" in state
        masks = torch.load(folder / "masks.pt", weights_only=True)
        assert int(masks["masks"]["edges"]["mask"].sum()) == 2639
        graph = torch.load(folder / "pruned_graph.pt", weights_only=True)
        assert graph["undirected_edges"].shape == (2, 2639)
        assert graph["edge_index"].shape == (2, 2 * 2639)
        assert graph["feature_index"].numel() == 1433 - 716
    assert not list(out.rglob("*.tmp"))


def test_existing_non_empty_out_is_refused_and_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    result = _cli(["prune", "--dataset", "synthetic", "--out", str(out)])
    assert result.returncode == 2
    assert "already exists and is not empty" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_missing_data_names_the_paths_tried(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    result = _cli(["prune", "--dataset", "citeseer", "--data-root", str(empty), "--out", str(out)],
                  cwd=tmp_path, env={"GNNPRUNE_DATA": ""})
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "citeseer" in line and str(empty / "Planetoid" / "CiteSeer" / "raw") in line
    assert "shared/data/Planetoid/CiteSeer/raw" in line
    assert not out.exists()


def test_help_documents_the_options():
    result = _cli(["prune", "--help"])
    assert result.returncode == 0
    for flag in ("--weight-sparsity", "--edge-sparsity", "--feature-sparsity", "--seeds", "--out", "--data-root",
                 "pruned_graph.pt"):
        assert flag in result.stdout


# interruption and resume ----------------------------------------------------------------------------------------
SMALL = "synthetic:num_nodes=400,num_classes=3,num_features=32,num_val=100,num_test=200"
CGP_RUN = ["prune", "--dataset", SMALL, "--weight-sparsity", "0.8", "--edge-sparsity", "0.5", "--feature-sparsity",
           "0.5", "--epochs", "400", "--hidden", "32", "--threads", "1", "--checkpoint-every", "50", "--no-progress"]
RESULT_KEYS = ("test", "val", "train", "best_epoch", "final_check", "sparsity", "macs", "mask_updates", "epochs")


def _results(out):
    metrics = json.loads((out / "seed-0" / "metrics.json").read_text())
    return {key: metrics[key] for key in RESULT_KEYS}


def _launch(args):
    return subprocess.Popen([sys.executable, "-m", "gnnprune", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def _wait_for(path, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_sigterm_mid_schedule_then_resume_equals_an_uninterrupted_run(tmp_path):
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    process = _launch([*CGP_RUN, "--out", str(cut)])
    _wait_for(cut / "seed-0" / "checkpoint.pt", process)  # first checkpoint: after epoch 49, 3 mask updates in
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    record = json.loads((cut / "metrics.json").read_text())
    assert record["status"] == "interrupted"
    stopped = record["interrupted"]["after_epoch"]
    assert 49 <= stopped < 300  # inside the pruning schedule (epochs 20, 30, ..., 300)
    last = stderr.strip().splitlines()[-1]
    command = f"python -m gnnprune {shlex.join([*CGP_RUN, '--out', str(cut)])} --resume"
    assert last.endswith(f"resume with: {command}") and f"after epoch {stopped} of seed 0" in last
    assert not (cut / "seed-0" / "metrics.json").exists()

    resumed = _cli(shlex.split(command)[3:])
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((cut / "metrics.json").read_text())["status"] == "done"
    assert _cli([*CGP_RUN, "--out", str(whole)]).returncode == 0
    assert _results(cut) == _results(whole)
    assert len(_results(whole)["mask_updates"]) == 29


def test_sigint_exits_130_with_an_interrupted_record(tmp_path):
    out = tmp_path / "run"
    process = _launch([*CGP_RUN, "--out", str(out)])
    _wait_for(out / "seed-0" / "checkpoint.pt", process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "SIGINT: finishing this epoch" in stderr
    assert json.loads((out / "metrics.json").read_text())["status"] == "interrupted"


def test_non_finite_loss_exits_1_with_one_line_and_a_failed_record(tmp_path):
    out = tmp_path / "run"
    result = _cli(["prune", "--dataset", SMALL, "--epochs", "30", "--lr", "1e30", "--hidden", "8", "--no-progress",
                   "--checkpoint-every", "1", "--out", str(out)])
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"gnnprune prune: error: seed 0: .* became .* at epoch (\d+); stopped, the last good "
                        r"checkpoint \S+checkpoint\.pt is kept \(try a lower --lr\)", line), line
    epoch = int(re.search(r"at epoch (\d+)", line).group(1))
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "failed" and f"at epoch {epoch}" in record["error"]
    assert torch.load(out / "seed-0" / "checkpoint.pt", weights_only=True)["epoch"] == epoch - 1
