"""Worker processes of tests/test_distributed.py (importable by spawned children: not a test module)."""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import torch

from gnnprune.checkpoint import seed_everything
from gnnprune.copruning import CoPruner, PruneTargets
from gnnprune.data.synthetic import CSBMConfig, csbm
from gnnprune.distributed import World, init_from_env, shutdown, train_once_distributed
from gnnprune.loader import MiniBatchConfig
from gnnprune.methods import CGP, CGPConfig, train_once
from gnnprune.minibatch import train_once_minibatch
from gnnprune.nn import build_model
from gnnprune.training import TrainConfig

EPOCHS = 24
TARGETS = PruneTargets(weights=0.5, edges=0.3, features=0.3)


def free_port() -> int:
    """A TCP port free at the time of asking (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_graph():
    return csbm(CSBMConfig(num_nodes=300, num_classes=3, num_features=24, avg_degree=5, homophily=0.85,
                           signal=1.5, train_per_class=10, num_val=60, num_test=120, seed=3))


def _join(rank: int, world_size: int, port: int) -> World:
    if "TORCHELASTIC_RUN_ID" in os.environ:  # started by torchrun: its environment stands
        return init_from_env(timeout_s=60)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    return init_from_env(timeout_s=60)


def cgp_run(world: World | None, batching: MiniBatchConfig | None = None, *, perturb_rank: int | None = None,
            die_rank: int | None = None) -> dict:
    """A short CGP run (learned gates, regrowth) on :func:`small_graph`; returns masks, weights, scores."""
    torch.set_num_threads(1)
    data = small_graph()
    seed_everything(0)
    model = build_model("gcn", data.num_features, data.num_classes, 16, 2, 0.5)
    config = TrainConfig(epochs=EPOCHS, seed=0)
    method = CGP(CGPConfig.for_epochs(EPOCHS, update_every=4), TARGETS)
    if world is not None and world.rank == perturb_rank:  # this rank scores feature columns differently
        original = CoPruner.feature_contribution
        CoPruner.feature_contribution = lambda self: original(self).flip(0)
    if world is not None and world.rank == die_rank:
        on_epoch_start = method.on_epoch_start

        def dying(run, epoch):
            if epoch == 3:
                os._exit(3)
            on_epoch_start(run, epoch)
        method.on_epoch_start = dying
    options = {"learn_gates": True, "progress": False}
    if world is None and batching is not None:
        fitted = train_once_minibatch(method, model, data, config, batching=batching, **options)
    elif world is None:
        fitted = train_once(method, model, data, config, **options)
    else:
        fitted = train_once_distributed(method, model, data, config, world, batching=batching, **options)
    result, pruner = fitted.result, fitted.pruner
    return {"masks": {site.name: site.mask.clone() for site in pruner.engine},
            "weights": {name: p.detach().clone() for name, p in model.named_parameters()},
            "test": result.test, "val": result.val, "best_epoch": result.best_epoch,
            "losses": [h["loss"] for h in result.history]}


def single_process(out: str) -> None:
    """Reference run in a fresh process (1 thread, as each rank)."""
    torch.save(cgp_run(None), Path(out) / "single.pt")


#: the mini-batch runs of the tests, by loader
BATCHINGS = {"random-nodes": MiniBatchConfig(batch_size=100),
             "neighbors": MiniBatchConfig(batch_size=100, loader="neighbors", fanouts=(5, 5))}


def rank_main(rank: int, world_size: int, port: int, out: str, mode: str) -> None:
    """One rank: ``mode`` is ``full``, a mini-batch loader's name, ``perturb`` (rank 1 scores differently) or ``die``
    (rank 1 exits at epoch 3). Writes ``rank-R.pt`` or ``rank-R.err`` (the error's text)."""
    world = _join(rank, world_size, port)
    try:
        batching = BATCHINGS.get(mode)
        state = cgp_run(world, batching, perturb_rank=1 if mode == "perturb" else None,
                        die_rank=1 if mode == "die" else None)
        torch.save(state, Path(out) / f"rank-{rank}.pt")
    except Exception as exc:
        (Path(out) / f"rank-{rank}.err").write_text(f"{type(exc).__name__}: {exc}")
        sys.exit(1)
    finally:
        shutdown()


DATASET = ("synthetic:num_nodes=300,num_classes=3,num_features=24,avg_degree=5,homophily=0.85,signal=1.5,"
           "num_val=60,num_test=120")
#: a short CGP run of the command line (full batch), small enough for two processes on two cores
CLI_RUN = ["prune", "--dataset", DATASET, "--hidden", "16", "--epochs", "24", "--weight-sparsity", "0.5",
           "--edge-sparsity", "0.3", "--feature-sparsity", "0.3", "--update-every", "4", "--threads", "1",
           "--no-progress", "--checkpoint-every", "4", "--dist-timeout", "60"]


def cli_rank(rank: int, world_size: int, port: int, argv: list[str], codes: str, stop_after: int | None) -> None:
    """``gnnprune`` as one of ``world_size`` ranks (the environment torchrun would set); exit code to
    ``codes/rank-R``. ``stop_after``: rank 1 alone asks to stop after that many epochs."""
    from gnnprune.checkpoint import StopRequest
    from gnnprune.cli import main

    if world_size > 1:
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if stop_after is not None and rank == 1:
        polls = iter(range(10_000))
        StopRequest.__call__ = lambda self: next(polls) >= stop_after
    code = main(list(argv))
    (Path(codes) / f"rank-{rank}").write_text(str(code))


def launch(target, world_size: int, args: tuple, timeout_s: float = 120.0) -> list[int | None]:
    """Run ``target(rank, world_size, port, *args)`` in ``world_size`` spawned processes; their exit
    codes (``None``: still running at the timeout, then killed)."""
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    port = free_port()
    processes = [context.Process(target=target, args=(rank, world_size, port, *args)) for rank in range(world_size)]
    for process in processes:
        process.start()
    deadline = time.monotonic() + timeout_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    codes = [process.exitcode for process in processes]
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    return codes


if __name__ == "__main__":  # under torchrun: python -m torch.distributed.run ... distributed_workers.py MODE OUT
    rank_main(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), 0, sys.argv[2], sys.argv[1])
