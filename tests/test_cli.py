import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from gnnprune.checkpoint import TrainingInterrupted
from gnnprune.cli import main
from helpers import REPO


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
        assert graph["edge_weight"].shape == (2 * 2639,)  # one weight per directed column, as PyG expects
        assert graph["feature_index"].numel() == 1433 - 716
    assert not list(out.rglob("*.tmp"))


def test_cora_gcn_unit_pruning_keeps_the_accuracy_with_exact_unit_counts(tmp_path, cora):
    """Acceptance setting, one seed: 90% of hidden units, 50% of edges and features."""
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["prune", "--dataset", "cora", "--weight-structure", "unit", "--weight-sparsity", "0.9",
                     "--edge-sparsity", "0.5", "--feature-sparsity", "0.5", "--seed", "0", "--out", str(out),
                     "--no-progress"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    metrics = json.loads((out / "seed-0" / "metrics.json").read_text())
    assert metrics["test"] >= 0.80
    sparsity = metrics["sparsity"]
    assert sparsity["per_unit_group"] == {"convs.0": {"units": 256, "live": 26, "sparsity": pytest.approx(230 / 256)}}
    assert sparsity["kept_features"] == 717 and sparsity["kept_edges"] == 2639
    masks = torch.load(out / "seed-0" / "masks.pt", weights_only=True)["masks"]
    assert int(masks["unit:convs.0"]["mask"].sum()) == 26
    state = torch.load(out / "seed-0" / "model.pt", weights_only=True)
    dead = ~masks["unit:convs.0"]["mask"]
    assert torch.all(state["convs.0.lin.weight"][:, dead] == 0) and torch.all(state["convs.0.bias"][dead] == 0)
    assert torch.all(state["convs.1.lin.weight"][dead] == 0)
    assert torch.all(state["convs.1.lin.weight"].abs().sum(0) > 0)  # all 7 class outputs live
    assert [layer["pruned"]["aggregation"] for layer in metrics["macs"]["per_layer"]] == [
        (2 * 2639 + 2708) * 26, (2 * 2639 + 2708) * 7]


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
    result = _cli(["prune", "--dataset", "ogbn-arxiv", "--data-root", str(empty), "--out", str(out)],
                  cwd=tmp_path, env={"GNNPRUNE_DATA": ""})
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and "ogbn-arxiv" in line and str(empty / "ogbn_arxiv") in line
    assert not out.exists()


def test_embedded_data_when_no_root_holds_it(tmp_path):
    """A data root without Cora falls through to the copy shipped with the package."""
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _cli(["prune", "--dataset", "cora", "--data-root", str(empty), "--epochs", "2", "--no-progress",
                   "--out", str(tmp_path / "out")], cwd=tmp_path, env={"GNNPRUNE_DATA": "", "GNNPRUNE_CACHE": ""})
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "data").exists()
    assert (empty / "cache" / "Planetoid" / "Cora" / "processed").is_dir()


def test_help_documents_the_options():
    result = _cli(["prune", "--help"])
    assert result.returncode == 0
    for flag in ("--weight-sparsity", "--edge-sparsity", "--feature-sparsity", "--seeds", "--out", "--data-root",
                 "pruned_graph.pt", "--resume", "--checkpoint-every", "checkpoint.pt"):
        assert flag in result.stdout


# interruption and resume ----------------------------------------------------------------------------------------
SMALL = "synthetic:num_nodes=400,num_classes=3,num_features=32,num_val=100,num_test=200"
CGP_RUN = ["prune", "--dataset", SMALL, "--weight-sparsity", "0.8", "--edge-sparsity", "0.5", "--feature-sparsity",
           "0.5", "--epochs", "300", "--hidden", "32", "--threads", "1", "--checkpoint-every", "40", "--no-progress"]
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


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert _cli([*CGP_RUN, "--out", str(out)]).returncode == 0
    results = _results(out)
    assert len(results["mask_updates"]) == 22
    return results


def test_sigterm_mid_schedule_then_resume_equals_an_uninterrupted_run(tmp_path, uninterrupted):
    cut = tmp_path / "cut"
    process = _launch([*CGP_RUN, "--out", str(cut)])
    _wait_for(cut / "seed-0" / "checkpoint.pt", process)  # first checkpoint: after epoch 39, 3 mask updates in
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    record = json.loads((cut / "metrics.json").read_text())
    assert record["status"] == "interrupted"
    stopped = record["interrupted"]["after_epoch"]
    assert 39 <= stopped < 225  # inside the pruning schedule (mask updates at epochs 15, 25, ..., 215, 225)
    last = stderr.strip().splitlines()[-1]
    command = f"python -m gnnprune {shlex.join([*CGP_RUN, '--out', str(cut)])} --resume"
    assert last.endswith(f"resume with: {command}") and f"after epoch {stopped} of seed 0" in last
    assert not (cut / "seed-0" / "metrics.json").exists()

    resumed = _cli(shlex.split(command)[3:])
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((cut / "metrics.json").read_text())["status"] == "done"
    assert _results(cut) == uninterrupted


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, uninterrupted):
    """A lost machine (SIGKILL: no handler runs): the folder still says 'running'; --resume continues it."""
    out = tmp_path / "killed"
    process = _launch([*CGP_RUN, "--out", str(out)])
    _wait_for(out / "seed-0" / "checkpoint.pt", process)
    process.kill()
    process.communicate(timeout=120)
    assert json.loads((out / "metrics.json").read_text())["status"] == "running"
    (out / "seed-0" / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")  # a kill mid-write
    resumed = _cli([*CGP_RUN, "--out", str(out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert _results(out) == uninterrupted
    assert not list(out.rglob("*.tmp"))


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


# the bad-input table --------------------------------------------------------------------------------------------
# Every case runs the CLI in-process on a prepared folder and must exit 2 with one stderr line holding the
# expected text, leaving every file as it was. conftest.py counts the cases in the terminal summary.
TABLE_RUN = ["prune", "--dataset", "synthetic:num_nodes=300,num_classes=3,num_features=16,num_val=60,num_test=100",
             "--weight-sparsity", "0.5", "--epochs", "20", "--hidden", "8", "--seeds", "0,1", "--checkpoint-every", "5",
             "--no-progress"]


def _with(extra, base=TABLE_RUN):
    """``base`` with the flags of ``extra`` set: a present flag gets the new value, others are appended."""
    args = list(base)
    i = 0
    while i < len(extra):
        flag, value = extra[i], extra[i + 1:i + 2]
        if value and value[0].startswith("--"):
            value = []  # a switch such as --resume
        if flag in args and value:
            args[args.index(flag) + 1] = value[0]
        elif flag not in args:
            args += [flag, *value]
        i += 1 + len(value)
    return args


def _corrupt_checkpoint(run):
    path = run / "seed-0" / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:2000])


def _tamper_checkpoint(run):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    torch.save({"format": "gnnprune-checkpoint", "evil": Evil()}, run / "seed-0" / "checkpoint.pt")


def _checkpoint_of_other_seed(run):
    (run / "seed-1").mkdir()
    os.replace(run / "seed-0" / "checkpoint.pt", run / "seed-1" / "checkpoint.pt")


def _model_as_checkpoint(run):
    shutil.copy(run.parent / "done" / "seed-0" / "model.pt", run / "seed-0" / "checkpoint.pt")


def _write(relative, data):
    def write(run):
        (run / relative).write_bytes(data)
    return write


def _truncate_cora(root):
    x = root / "Planetoid" / "Cora" / "raw" / "ind.cora.x"
    x.write_bytes(x.read_bytes()[:300])


def _garble_cora_graph(root):
    (root / "Planetoid" / "Cora" / "raw" / "ind.cora.graph").write_text("not a pickle")


def _directory_for_cora_y(root):
    y = root / "Planetoid" / "Cora" / "raw" / "ind.cora.y"
    y.unlink()
    y.mkdir()


# (id, extra arguments, expected text of the error line, what to prepare: None, "run" (an interrupted run
#  folder at {run}), "done" (a finished one), a function of the run folder, or ("cora", a function of a data root))
BAD_INPUT = [
    ("weight-sparsity=1", ["--weight-sparsity", "1.0"], "sparsity must be in [0, 1), got 1.0", None),
    ("weight-sparsity>1", ["--weight-sparsity", "1.5"], "sparsity must be in [0, 1), got 1.5", None),
    ("edge-sparsity<0", ["--edge-sparsity", "-0.1"], "sparsity must be in [0, 1), got -0.1", None),
    ("feature-sparsity-text", ["--feature-sparsity", "abc"], "'abc' is not a number", None),
    ("feature-sparsity-nan", ["--feature-sparsity", "nan"], "sparsity must be in [0, 1), got nan", None),
    ("weight-sparsity-empty", ["--weight-sparsity", ""], "'' is not a number", None),
    ("epochs=0", ["--epochs", "0"], "argument --epochs: must be >= 1, got 0", None),
    ("epochs<0", ["--epochs", "-3"], "must be >= 1, got -3", None),
    ("epochs-float", ["--epochs", "2.5"], "'2.5' is not an integer", None),
    ("dist-timeout=0", ["--dist-timeout", "0"], "argument --dist-timeout: must be >= 1, got 0", None),
    ("model-unknown", ["--model", "transformer"], "unknown model 'transformer'; choose from ", None),
    ("dataset-unknown", ["--dataset", "pubmed"], "unknown dataset 'pubmed'; choose from cora, citeseer, synthetic",
     None),
    ("synthetic-unknown-key", ["--dataset", "synthetic:nodes=5"], "bad synthetic option 'nodes=5'", None),
    ("synthetic-bad-int", ["--dataset", "synthetic:num_nodes=abc"], "num_nodes needs an int", None),
    ("synthetic-bad-homophily", ["--dataset", "synthetic:homophily=2"], "homophily must be in [0, 1], got 2.0", None),
    ("synthetic-split-too-big", ["--dataset", "synthetic:num_nodes=300"], "300 nodes cannot hold", None),
    ("seeds-duplicate", ["--seeds", "1,1"], "distinct", None),
    ("seeds-text", ["--seeds", "a,b"], "seeds must be comma-separated integers, got 'a,b'", None),
    ("seeds-negative", ["--seeds", "-1"], "distinct non-negative integers, got '-1'", None),
    ("seed-and-seeds", ["--seed", "3"], "argument --seed: not allowed with argument --seeds", None),
    ("hidden=0", ["--hidden", "0"], "argument --hidden: must be >= 1, got 0", None),
    ("hidden-huge", ["--hidden", "100000000000"], "cannot build model 'gcn' with these settings: RuntimeError", None),
    ("layers=0", ["--layers", "0"], "argument --layers: must be >= 1, got 0", None),
    ("dropout=1", ["--dropout", "1"], "argument --dropout: sparsity must be in [0, 1), got 1", None),
    ("option-no-value", ["--option", "K"], "bad --option 'K'; use KEY=VALUE", None),
    ("option-unknown", ["--option", "foo=1"], "unexpected keyword argument 'foo'", None),
    ("option-bad-value", ["--model", "sgc", "--option", "K=-1"], "K must be >= 0, got -1", None),
    ("lr<0", ["--lr", "-1"], "argument --lr: must be a finite number >= 0, got -1", None),
    ("lr=0", ["--lr", "0"], "lr must be > 0, got 0.0", None),
    ("lr=inf", ["--lr", "inf"], "argument --lr: must be a finite number >= 0, got inf", None),
    ("weight-decay<0", ["--weight-decay", "-0.001"], "argument --weight-decay: must be a finite number >= 0", None),
    ("gate-lr-nan", ["--gate-lr", "nan"], "argument --gate-lr: must be a finite number >= 0, got nan", None),
    ("pseudo-label-weight<0", ["--pseudo-label-weight", "-0.5"], "--pseudo-label-weight: must be a finite", None),
    ("prune-start<0", ["--prune-start", "-1"], "argument --prune-start: must be >= 0, got -1", None),
    ("prune-end=epochs", ["--epochs", "10", "--prune-end", "10"], "prune_end (10) must be < epochs (10)", None),
    ("prune-end<start", ["--prune-start", "15", "--prune-end", "5"], "need 0 <= prune_start <= prune_end", None),
    ("update-every=0", ["--update-every", "0"], "argument --update-every: must be >= 1, got 0", None),
    ("regrow-fraction>1", ["--regrow-fraction", "1.5"], "regrow_fraction must be in [0, 1], got 1.5", None),
    ("regrow-fraction-text", ["--regrow-fraction", "abc"], "invalid float value: 'abc'", None),
    ("weight-structure-unknown", ["--weight-structure", "diagonal"], "invalid choice: 'diagonal'", None),
    ("weight-structure-output", ["--weight-structure", "output"], "invalid choice: 'output'", None),
    ("unit-with-erk", ["--weight-structure", "unit", "--weight-distribution", "erk"],
     "unit pruning removes the same fraction of every unit group (weight distribution 'uniform')", None),
    ("unit-without-hidden-units", ["--model", "sgc", "--weight-structure", "unit"],
     "model 'sgc' has no hidden units: --weight-structure unit cannot prune its weights (use element)", None),
    ("weight-distribution-unknown", ["--weight-distribution", "normal"], "invalid choice: 'normal'", None),
    ("edge-ranking-unknown", ["--edge-ranking", "nodewise"], "invalid choice: 'nodewise'", None),
    ("feature-score-unknown", ["--feature-score", "l2"], "invalid choice: 'l2'", None),
    ("edge-prior<0", ["--edge-prior", "-1"], "argument --edge-prior: must be a finite number >= 0, got -1", None),
    ("feature-gate-lr<0", ["--feature-gate-lr", "-0.1"], "argument --feature-gate-lr: must be a finite number >= 0", None),
    ("ugs-mask-noise>=1", ["--method", "ugs", "--weight-sparsity", "0.5", "--ugs-mask-noise", "1"],
     "mask_noise must be in [0, 1), got 1.0", None),
    ("unit-with-global", ["--weight-structure", "unit", "--weight-distribution", "global"],
     "unit pruning removes the same fraction of every unit group (weight distribution 'uniform')", None),
    ("early-bird-window=1", ["--method", "oneshot", "--early-bird-window", "1"],
     "argument --early-bird-window: must be >= 2, got 1", None),
    ("early-bird-threshold>1", ["--method", "oneshot", "--early-bird-threshold", "1.5"],
     "early-bird threshold must be in [0, 1], got 1.5", None),
    ("early-bird-not-oneshot", ["--early-bird-window", "5"],
     "--early-bird-window / --early-bird-threshold / --early-bird-min-epochs apply to --method oneshot and ugs only", None),
    ("early-bird-min-epochs<0", ["--method", "ugs", "--early-bird-min-epochs", "-1"],
     "argument --early-bird-min-epochs: must be >= 0, got -1", None),
    ("jackpot-from-not-jackpot", ["--jackpot-from", "{done}"], "--jackpot-from applies to --method jackpot only", None),
    ("jackpot-from-missing", ["--method", "jackpot", "--jackpot-from", "{data}"],
     "--jackpot-from: {data}/metrics.json not found", None),
    ("jackpot-from-pruned", ["--method", "jackpot", "--jackpot-from", "{done}"],
     "--jackpot-from {done} is a pruned run (cgp); give a dense one", None),
    ("jackpot-dense-targets", ["--method", "jackpot", "--weight-sparsity", "0"],
     "method jackpot needs a sparsity target above 0", None),
    ("search-epochs=0", ["--method", "jackpot", "--search-epochs", "0"],
     "argument --search-epochs: must be >= 1, got 0", None),
    ("score-lr=0", ["--method", "jackpot", "--score-lr", "0"], "argument --score-lr: must be > 0, got 0", None),
    ("teacher-weight-not-jackpot", ["--teacher-weight", "0.5"], "--teacher-weight applies to --method jackpot only",
     None),
    ("jackpot-minibatch", ["--method", "jackpot", "--batch-size", "32"], "jackpot searches full-batch only", None),
    ("jackpot-units", ["--method", "jackpot", "--weight-structure", "unit"],
     "jackpot searches single weights only", None),
    ("jackpot-from-other-model", ["--method", "jackpot", "--model", "gat", "--jackpot-from", "{done}"],
     "--jackpot-from {done} is a run of gcn on", None),
    ("early-bird-colt", ["--method", "colt", "--weight-sparsity", "0.5", "--early-bird-threshold", "0.1"],
     "--early-bird-window / --early-bird-threshold / --early-bird-min-epochs apply to --method oneshot and ugs only", None),
    ("fanout-zero", ["--batch-size", "100", "--loader", "neighbors", "--fanout", "10,0"],
     "expected positive integers separated by commas", None),
    ("fanout-text", ["--fanout", "ten"], "expected positive integers separated by commas", None),
    ("loader-unknown", ["--batch-size", "100", "--loader", "cluster"], "invalid choice: 'cluster'", None),
    ("threads=0", ["--threads", "0"], "argument --threads: must be >= 1, got 0", None),
    ("checkpoint-every<0", ["--checkpoint-every", "-1"], "argument --checkpoint-every: must be >= 0, got -1", None),
    ("unknown-flag", ["--speed", "fast"], "unrecognized arguments: --speed fast", None),
    ("out-not-empty", ["--out", "{run}"], "already exists and is not empty; choose another --out", "run"),
    ("out-is-a-file", ["--out", "{run}/metrics.json"], "already exists and is not empty", "run"),
    ("cora-truncated", ["--dataset", "cora", "--data-root", "{data}"],
     "cannot load dataset 'cora' under {data}: UnpicklingError", ("cora", _truncate_cora)),
    ("cora-garbage", ["--dataset", "cora", "--data-root", "{data}"],
     "cannot load dataset 'cora' under {data}:", ("cora", _garble_cora_graph)),
    ("cora-unreadable", ["--dataset", "cora", "--data-root", "{data}"],
     "cannot load dataset 'cora' under {data}: IsADirectoryError", ("cora", _directory_for_cora_y)),
    ("resume-no-folder", ["--out", "{run}/nothing", "--resume"], "nothing to resume in {run}/nothing", "run"),
    ("resume-not-json", ["--out", "{run}", "--resume"], "cannot read {run}/metrics.json", _write("metrics.json", b"{")),
    ("resume-not-a-record", ["--out", "{run}", "--resume"], "{run}/metrics.json: not a gnnprune run record",
     _write("metrics.json", b"[1, 2]")),
    ("resume-binary-record", ["--out", "{run}", "--resume"], "cannot read {run}/metrics.json",
     _write("metrics.json", b"\xff\xfe\x00")),
    ("resume-done", ["--out", "{done}", "--resume"], "run folder {done} is done; nothing to resume", "done"),
    ("resume-other-sparsity", ["--out", "{run}", "--resume", "--weight-sparsity", "0.6"],
     "arguments differ from the run's in targets.weights", "run"),
    ("resume-other-model", ["--out", "{run}", "--resume", "--model", "sage"], "differ from the run's in ", "run"),
    ("resume-other-dataset", ["--out", "{run}", "--resume", "--dataset",
                              "synthetic:num_nodes=320,num_classes=3,num_features=16,num_val=60,num_test=100"],
     "differ from the run's in dataset, data.nodes", "run"),
    ("resume-other-seeds", ["--out", "{run}", "--resume", "--seeds", "0,2"], "differ from the run's in seeds", "run"),
    ("resume-other-epochs", ["--out", "{run}", "--resume", "--epochs", "24"],
     "differ from the run's in cgp.prune_end, train.epochs, train.pseudo_label_warmup", "run"),
    ("resume-truncated-checkpoint", ["--out", "{run}", "--resume"],
     "cannot load {run}/seed-0/checkpoint.pt: not a valid gnnprune file", _corrupt_checkpoint),
    ("resume-tampered-checkpoint", ["--out", "{run}", "--resume"],
     "cannot load {run}/seed-0/checkpoint.pt: not a valid gnnprune file (it holds objects other than tensors",
     _tamper_checkpoint),
    ("resume-empty-checkpoint", ["--out", "{run}", "--resume"],
     "cannot load {run}/seed-0/checkpoint.pt: not a valid gnnprune file (EOFError, empty or cut short)",
     _write("seed-0/checkpoint.pt", b"")),
    ("resume-foreign-checkpoint", ["--out", "{run}", "--resume"],
     "cannot load {run}/seed-0/checkpoint.pt: not a gnnprune checkpoint", _model_as_checkpoint),
    ("resume-checkpoint-of-other-seed", ["--out", "{run}", "--resume"],
     "checkpoint {run}/seed-1/checkpoint.pt belongs to another run", _checkpoint_of_other_seed),
]
EXPORT_SPEC = TABLE_RUN[2]
BAD_INPUT += [  # export and predict: the whole command line is given, with --out {out}
    ("export-no-run", ["export", "{run}/nothing", "--out", "{out}"], "{run}/nothing/metrics.json not found", "run"),
    ("export-tampered-masks", ["export", "{done}", "--out", "{out}"],
     "cannot load {done}/seed-0/masks.pt: missing key 'masks'", lambda run: _drop_key(run.parent / "done" / "seed-0" / "masks.pt", "masks")),
    ("export-unknown-seed", ["export", "{done}", "--seed", "7", "--out", "{out}"], "run {done} has no seed 7; its seeds are 0, 1",
     "done"),
    ("export-unfinished", ["export", "{run}", "--out", "{out}"], "run {run} has no finished seed", "run"),
    ("export-out-not-empty", ["export", "{done}", "--out", "{run}"], "already exists and is not empty", "run"),
    ("predict-not-an-export", ["predict", "{done}", "--dataset", EXPORT_SPEC, "--out", "{out}"],
     "{done}/architecture.json not found (not a gnnprune export folder?)", "done"),
    ("predict-out-exists", ["predict", "{export}", "--dataset", EXPORT_SPEC, "--out", "{run}/metrics.json"],
     "output file {run}/metrics.json already exists", "run"),
    ("predict-other-features", ["predict", "{export}", "--dataset", EXPORT_SPEC.replace("num_features=16", "num_features=8"),
                                "--out", "{out}"], "has 8 features; the export in {export} reads 16", "run"),
    ("predict-damaged-model", ["predict", "{export}", "--dataset", EXPORT_SPEC, "--out", "{out}"],
     "cannot load {export}/model.pt: missing key 'net.convs.0.bias'",
     lambda run: _drop_key(run.parent / "export" / "model.pt", "net.convs.0.bias")),
]
BAD_INPUT += [  # gnnprune cnn: the whole command line is given (digits data, no download)
    ("cnn-rmnet-unknown-model", ["cnn", "rmnet", "--model", "vgg16_bn", "--dataset", "digits", "--checkpoint",
                                 "{run}/metrics.json", "--out", "{out}"], "unknown model 'vgg16_bn'; choose one of resnet20", "run"),
    ("cnn-rmnet-no-checkpoint", ["cnn", "rmnet", "--dataset", "digits", "--checkpoint", "{run}/none.pt", "--out", "{out}"],
     "no such file: {run}/none.pt", "run"),
    ("cnn-analyse-k-too-large", ["cnn", "analyse", "--dataset", "digits", "--checkpoint", "{run}/none.pt", "--images", "8",
                                 "--k", "8", "--out", "{out}"], "--k 8 must be below --images 8", "run"),
]
BAD_INPUT += [
    ("cnn-train-no-init-weights", ["cnn", "train", "--model", "convnet", "--dataset", "digits", "--init-from",
                                   "{run}/none.pt", "--out", "{out}"], "--init-from {run}/none.pt: no such file", "run"),
    ("cnn-train-init-other-model", ["cnn", "train", "--model", "convnet", "--dataset", "digits", "--init-from",
                                    "{run}/other.pt", "--out", "{out}"],
     "{run}/other.pt is not a state_dict of convnet for digits: ", lambda run: torch.save({"w": torch.zeros(1)}, run / "other.pt")),
    ("cnn-train-negative-cutout", ["cnn", "train", "--model", "convnet", "--dataset", "digits", "--cutout", "-1",
                                   "--out", "{out}"], "argument --cutout: must be >= 0, got -1", None),
]
BAD_INPUT_CASES = 106


def _drop_key(path, key):
    state = torch.load(path, weights_only=True)
    del state[key]
    torch.save(state, path)


def test_bad_input_table_size():
    assert len(BAD_INPUT) == BAD_INPUT_CASES
    assert len({case[0] for case in BAD_INPUT}) == BAD_INPUT_CASES


@pytest.fixture(scope="module")
def prepared_runs(tmp_path_factory):
    """An interrupted run of ``TABLE_RUN`` (seed 0 stopped after epoch 11) and a finished one."""
    from gnnprune.cli import _config_from_args, build_parser
    from gnnprune.data import load_dataset
    from gnnprune.experiment import run_experiment

    folder = tmp_path_factory.mktemp("prepared")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = _config_from_args(build_parser().parse_args(_with(["--out", str(folder / "x")])))
        data = load_dataset(config.dataset)
        polls = iter(range(100))
        with pytest.raises(TrainingInterrupted):
            run_experiment(config, data, folder / "run", progress=False, checkpoint_every=5,
                           should_stop=lambda: next(polls) == 12)
        assert main(_with(["--out", str(folder / "done")])) == 0
        assert main(["export", str(folder / "done"), "--out", str(folder / "export")]) == 0
    finally:
        torch.set_num_threads(threads)
    return folder


def _snapshot(*folders):
    """Every file's bytes (the data loader's own cache aside)."""
    return {p: p.read_bytes() for folder in folders for p in sorted(folder.rglob("*"))
            if p.is_file() and "cache" not in p.relative_to(folder).parts}


@pytest.mark.parametrize("case", BAD_INPUT, ids=[case[0] for case in BAD_INPUT])
def test_bad_input(case, tmp_path, prepared_runs, capsys):
    name, extra, message, prepare = case
    places = {"run": tmp_path / "run", "done": tmp_path / "done", "data": tmp_path / "data",
              "export": tmp_path / "export", "out": tmp_path / "out"}
    for name in ("run", "done", "export"):
        shutil.copytree(prepared_runs / name, places[name])
    if isinstance(prepare, tuple):
        raw = places["data"] / "Planetoid" / "Cora" / "raw"
        shutil.copytree(REPO / "data" / "Planetoid" / "Cora" / "raw", raw)
        for file in raw.iterdir():
            file.chmod(0o644)
        prepare[1](places["data"])
    elif callable(prepare):
        prepare(places["run"])
    fill = lambda text: text.format(**{k: str(v) for k, v in places.items()})  # noqa: E731
    whole = extra[0] in ("export", "predict", "cnn")  # a whole command line, not flags for TABLE_RUN
    args = [fill(a) for a in extra] if whole else _with([fill(a) for a in extra])
    if "--out" not in extra:
        args = _with(["--out", str(tmp_path / "out")], args)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fill(message) in lines[0], err
    assert lines[0].startswith("gnnprune")
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "out").exists() and not (REPO / "pwned").exists()


@pytest.mark.parametrize("model, extra, expected", [
    ("gat", [], "erk"), ("appnp", [], "erk"), ("gcn", [], "uniform"), ("gcn2", [], "uniform"),
    ("gat", ["--weight-distribution", "uniform"], "uniform"),  # an explicit choice wins
    ("gat", ["--method", "ugs"], "uniform"),  # UGS is uniform only
    ("gat", ["--weight-structure", "unit"], "uniform"),  # units: every group at the target
])
def test_weight_distribution_defaults_to_the_models(model, extra, expected):
    from gnnprune.cli import _config_from_args, build_parser

    args = build_parser().parse_args(["prune", "--dataset", "cora", "--model", model, "--out", "unused",
                                      "--weight-sparsity", "0.5", *extra])
    assert _config_from_args(args).weight_distribution.value == expected


@pytest.mark.parametrize("extra, ranking, score, prior", [
    ([], "local", "contribution", 0.0),
    (["--edge-ranking", "global", "--feature-score", "magnitude", "--edge-prior", "1e-4"], "global", "magnitude", 1e-4),
])
def test_edge_ranking_feature_score_and_edge_prior_reach_the_cgp_config(extra, ranking, score, prior):
    from gnnprune.cli import _config_from_args, build_parser

    args = build_parser().parse_args(["prune", "--dataset", "cora", "--out", "unused", "--edge-sparsity", "0.5", *extra])
    recorded = _config_from_args(args).as_dict()["cgp"]
    assert (recorded["edge_ranking"], recorded["feature_score"], recorded["edge_prior"]) == (ranking, score, prior)


def test_per_part_gate_learning_rates_reach_the_train_config():
    from gnnprune.cli import _config_from_args, build_parser

    args = build_parser().parse_args(["prune", "--dataset", "cora", "--out", "unused", "--edge-sparsity", "0.3",
                                      "--feature-gate-lr", "0", "--edge-gate-lr", "0.05"])
    train = _config_from_args(args).train
    assert (train.gate_lr, train.edge_gate_lr, train.feature_gate_lr, train.gate_lrs()) == (0.1, 0.05, 0.0, (0.05, 0.0))


@pytest.mark.parametrize("model, extra, prior", [("gcn2", [], 1e-4), ("appnp", [], 0.0), ("gcn2", ["--edge-prior", "0"], 0.0)])
def test_edge_prior_defaults_to_the_models(model, extra, prior):
    from gnnprune.cli import _config_from_args, build_parser

    args = build_parser().parse_args(["prune", "--dataset", "cora", "--model", model, "--out", "unused",
                                      "--edge-sparsity", "0.3", *extra])
    assert _config_from_args(args).cgp.edge_prior == prior
