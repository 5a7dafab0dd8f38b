import json
import os
import subprocess
import sys

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


BAD = [
    (["--weight-sparsity", "1.0"], "sparsity must be in [0, 1)"),
    (["--edge-sparsity", "-0.1"], "sparsity must be in [0, 1)"),
    (["--feature-sparsity", "abc"], "is not a number"),
    (["--epochs", "0"], "must be >= 1"),
    (["--model", "transformer"], "unknown model 'transformer'; choose from "),
    (["--dataset", "pubmed"], "choose from cora, citeseer, synthetic"),
    (["--seeds", "1,1"], "distinct"),
    (["--dataset", "synthetic:nodes=5"], "bad synthetic option"),
    (["--weight-sparsity", "0.5", "--epochs", "10", "--prune-end", "10"], "prune_end (10) must be < epochs (10)"),
]


@pytest.mark.parametrize("extra,message", BAD)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, extra, message):
    out = tmp_path / "out"
    args = ["prune", "--dataset", "cora", "--out", str(out)]
    for i in range(0, len(extra), 2):  # later flags override defaults
        if extra[i] in args:
            args[args.index(extra[i]) + 1] = extra[i + 1]
        else:
            args += extra[i:i + 2]
    result = _cli(args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()


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
