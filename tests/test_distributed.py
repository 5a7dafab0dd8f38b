"""Data-parallel co-pruning (gnnprune.distributed): hand-built pieces, then 2 gloo processes of 1 thread each."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import distributed_workers as workers
from gnnprune.cli import main
from gnnprune.distributed import (SHARED_FOLDER, Backend, World, _share_loss, check_masks_in_sync, launched_by_torchrun,
                                  mask_digests, rank_share)
from gnnprune.masks import MaskEngine, SiteKind

TIMEOUT_S = 180  # a run takes a few seconds; a hang fails the test instead of the suite


# hand-built ------------------------------------------------------------------------------------
def test_backend_follows_the_device():
    assert Backend.for_device("cpu") is Backend.GLOO
    assert Backend.for_device(torch.device("cuda", 1)) is Backend.NCCL
    assert World(device=torch.device("cuda", 0)).backend is Backend.NCCL and World().backend is Backend.GLOO


def test_torchrun_environment_is_recognised():
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
    assert launched_by_torchrun(env)
    assert not launched_by_torchrun({k: v for k, v in env.items() if k != "RANK"})


def test_rank_shares_partition_the_nodes_every_other_one():
    mask = torch.tensor([1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)  # nodes 0, 2, 3, 5, 6
    shares = [rank_share(mask, World(rank, 2)) for rank in range(2)]
    assert shares[0].nonzero().view(-1).tolist() == [0, 3, 6]
    assert shares[1].nonzero().view(-1).tolist() == [2, 5]
    assert rank_share(mask, World(0, 1)).equal(mask)


def test_the_mean_of_the_ranks_losses_is_the_whole_loss():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, -1.0], [0.5, 0.0]])
    target = torch.tensor([0, 1, 0, 1, 1])
    mask = torch.tensor([1, 1, 1, 0, 1], dtype=torch.bool)  # 4 nodes: shares of 2 and 2, or 2, 1, 1 of 3 ranks
    whole = F.cross_entropy(logits[mask], target[mask])
    for world_size in (2, 3):
        ranks = [_share_loss(F.cross_entropy, logits, target, mask, World(rank, world_size))
                 for rank in range(world_size)]
        assert float(sum(ranks) / world_size) == pytest.approx(float(whole), abs=1e-6)
    empty = _share_loss(F.cross_entropy, logits, target, torch.tensor([1, 0, 0, 0, 0], dtype=torch.bool), World(1, 2))
    assert float(empty) == 0.0


def test_mask_digests_change_with_one_entry():
    engine = MaskEngine()
    engine.add("edges", SiteKind.EDGE, 10)
    engine.add("features", SiteKind.FEATURE, 4)
    before = mask_digests(engine)
    assert before.shape == (2,) and before.equal(mask_digests(engine))
    mask = engine.mask("features").clone()
    mask[2] = False
    engine.set_mask("features", mask)
    after = mask_digests(engine)
    assert after[0] == before[0] and after[1] != before[1]
    check_masks_in_sync(engine, World())  # one rank agrees with itself


def test_ugs_under_torchrun_is_refused_before_joining(monkeypatch, capsys, tmp_path):
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1"),
                        ("MASTER_PORT", "1")):
        monkeypatch.setenv(name, value)
    assert main(["prune", "--dataset", "cora", "--method", "ugs", "--out", str(tmp_path / "out")]) == 2
    assert "--method ugs cannot run under torchrun" in capsys.readouterr().err


# two processes ----------------------------------------------------------------------------------
def _cli(world_size, out, codes, extra=(), stop_after=None):
    codes.mkdir(exist_ok=True)
    argv = [*workers.CLI_RUN, "--out", str(out), *extra]
    exits = workers.launch(workers.cli_rank, world_size, (argv, str(codes), stop_after), TIMEOUT_S)
    assert None not in exits, f"a rank hung: exit codes {exits}"
    return [int((codes / f"rank-{rank}").read_text()) if (codes / f"rank-{rank}").exists() else None
            for rank in range(world_size)]


def _saved(folder):
    seed = folder / "seed-0"
    return {"masks": torch.load(seed / "masks.pt", weights_only=True)["masks"],
            "model": torch.load(seed / "model.pt", weights_only=True),
            "metrics": json.loads((seed / "metrics.json").read_text())}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """The same full-batch CGP run on 1 process and on 2 (each rank holding half the training nodes)."""
    root = tmp_path_factory.mktemp("dist")
    assert _cli(1, root / "one", root / "codes-one") == [0]
    assert _cli(2, root / "two", root / "codes-two") == [0, 0]
    return root


def test_two_processes_equal_one(cli_runs):
    one, two = _saved(cli_runs / "one"), _saved(cli_runs / "two")
    for site, entry in one["masks"].items():
        assert entry["mask"].equal(two["masks"][site]["mask"]), site
    assert abs(one["metrics"]["test"] - two["metrics"]["test"]) <= 1e-6
    assert one["metrics"]["best_epoch"] == two["metrics"]["best_epoch"]
    for name, value in one["model"].items():  # float sums in another order: last bits only
        assert torch.allclose(value, two["model"][name], rtol=0, atol=1e-5), name
    record = json.loads((cli_runs / "two" / "metrics.json").read_text())
    assert record["status"] == "done" and record["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert "distributed" not in json.loads((cli_runs / "one" / "metrics.json").read_text())
    assert not list(SHARED_FOLDER.glob("gnnprune-graph-*"))  # the shared graph's file is gone once mapped


def test_an_interrupted_two_process_run_resumes_on_two_only(cli_runs, tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(2, out, tmp_path / "codes-a", stop_after=10) == [130, 130]  # rank 1 alone was asked to stop
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "interrupted" and record["interrupted"]["after_epoch"] == 9
    assert main([*workers.CLI_RUN, "--out", str(out), "--resume"]) == 2  # one process
    assert "it was trained on 2 process(es), this run has 1" in capsys.readouterr().err
    assert _cli(2, out, tmp_path / "codes-b", ["--resume"]) == [0, 0]
    resumed, whole = _saved(out), _saved(cli_runs / "two")
    for site, entry in whole["masks"].items():
        assert entry["mask"].equal(resumed["masks"][site]["mask"]), site
    assert resumed["metrics"]["test"] == whole["metrics"]["test"]
    for name, value in whole["model"].items():
        assert torch.allclose(value, resumed["model"][name], rtol=0, atol=1e-6), name


def test_perturbed_scores_on_one_rank_stop_the_run(tmp_path):
    exits = workers.launch(workers.rank_main, 2, (str(tmp_path), "perturb"), TIMEOUT_S)
    assert exits == [1, 1]
    for rank in range(2):
        error = (tmp_path / f"rank-{rank}.err").read_text()
        assert error.startswith("MaskMismatchError: masks differ across ranks after a mask update: rank 1 in "), error
        assert "features" in error


@pytest.mark.parametrize("loader", ["random-nodes", "neighbors"])
def test_minibatch_ranks_keep_the_same_masks(tmp_path, loader):
    assert workers.launch(workers.rank_main, 2, (str(tmp_path), loader), TIMEOUT_S) == [0, 0]
    ranks = [torch.load(tmp_path / f"rank-{rank}.pt", weights_only=True) for rank in range(2)]
    for site, mask in ranks[0]["masks"].items():
        assert mask.equal(ranks[1]["masks"][site]), site
    for name, value in ranks[0]["weights"].items():
        assert value.equal(ranks[1]["weights"][name]), name
    assert ranks[0]["test"] == ranks[1]["test"] >= 0.6


@pytest.mark.parametrize("loader", ["random-nodes", "neighbors"])
def test_one_rank_minibatch_run_equals_the_single_process_run(tmp_path, loader):
    """The data-parallel path with one rank draws and steps exactly as one process does."""
    assert workers.launch(workers.rank_main, 1, (str(tmp_path), loader), TIMEOUT_S) == [0]
    ranked = torch.load(tmp_path / "rank-0.pt", weights_only=True)
    threads = torch.get_num_threads()
    try:
        single = workers.cgp_run(None, workers.BATCHINGS[loader])  # sets 1 thread, as each rank
    finally:
        torch.set_num_threads(threads)
    for site, mask in single["masks"].items():
        assert mask.equal(ranked["masks"][site]), site
    for name, value in single["weights"].items():
        assert torch.allclose(value, ranked["weights"][name], rtol=0, atol=1e-6), name
    assert abs(single["test"] - ranked["test"]) <= 1e-6 and single["best_epoch"] == ranked["best_epoch"]


def test_a_dead_rank_ends_the_torchrun_job_naming_it(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               workers.__file__, "die", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    assert done.returncode != 0
    assert "rank      : 1 (local_rank: 1)" in done.stderr and "exitcode  : 3" in done.stderr, done.stderr[-2000:]
