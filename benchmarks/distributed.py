"""Overhead of data-parallel co-pruning on one machine: ``torchrun`` with 2 processes x 1 thread
(gloo, the graph shared between them) against 1 process x 2 threads, on the same mini-batch CGP run.

The run: ``synthetic:products`` scaled to ``--scale`` of its nodes and edges (its features,
classes, homophily, degree skew and split per class unchanged), GCN 2x256 with learned edge
weights and feature gates, ``--batches`` batches per epoch of the ``--loader`` (``random-nodes``:
2 processes take one part each per step, so half the steps of one process; ``neighbors``: each
batch's seeds are split between the processes, the same steps as one process), ``--epochs``
epochs (at least 5) with CGP mask updates at epochs 1 (probe pass and regrowth) and 3 (prune
only). Every epoch ends with the full-graph evaluation of the training loop (each process
evaluates the whole graph).

Per process: the time of every epoch (from the loop's stop polls), the graph loading time, the
peak RSS (``ru_maxrss``, which counts shared pages in every process that touched them) and the
peak PSS (shared pages split between the processes sharing them; sampled every 0.5 s from
``/proc/self/smaps_rollup``, so a lower bound). The ``--layouts`` alternate ``--repeats`` times;
``1x2-paired`` is one process stepping on 2 batches at a time, which separates what data
parallelism changes in the optimisation (with ``random-nodes``, half the steps) from the
distribution itself.

    python -m benchmarks.distributed --out results/distributed
    python -m benchmarks.distributed --scale 0.05 --repeats 1 --out /tmp/distributed   # smoke test
    python -m benchmarks.distributed --scale 0.05 --epochs 20 --layouts 1x2,2x1,1x2-paired --repeats 1 --out /tmp/accuracy
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from gnnprune.machine import load_average, load_note

PRODUCTS = {"num_nodes": 2_449_029, "num_edges": 61_859_140}
#: processes x threads per process; ``1x2-paired``: one process that steps on the mean loss of 2
#: batches at a time, the optimisation 2 ranks perform (:func:`paired_minibatch_step`)
LAYOUTS = {"1x2": (1, 2), "2x1": (2, 1), "1x2-paired": (1, 2)}
MIN_EPOCHS = 5
UPDATE_EPOCHS = (1, 3)  # mask updates (epoch 1 with the probe pass and regrowth)
PROBE_EPOCH = 1


def plain_epochs(epochs: int) -> list[int]:
    """Epochs of training and evaluation only: from epoch 2 on (epoch 0 pays first-call costs),
    without a mask update."""
    return [e for e in range(2, epochs) if e not in UPDATE_EPOCHS]


def dataset_spec(scale: float) -> str:
    sizes = {key: max(1, round(value * scale)) for key, value in PRODUCTS.items()}
    if scale == 1.0:
        return "synthetic:products"
    split = "" if scale >= 0.25 else (f",train_per_class={max(5, round(1000 * scale))},"
                                      f"num_val={round(40_000 * scale)},num_test={round(200_000 * scale)}")
    return f"synthetic:products,num_nodes={sizes['num_nodes']},num_edges={sizes['num_edges']}{split}"


def _memory_gb(field: str) -> float:
    with open("/proc/self/smaps_rollup") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def paired_minibatch_step(run, method) -> dict:
    """One epoch of one process that takes 2 batches per optimizer step (the mean of their losses):
    with ``random-nodes`` the optimisation of 2 data-parallel ranks, without the second process."""
    pruner, losses = run.pruner, []
    batches = list(pruner.batches())
    for first in range(0, len(batches), 2):
        run.optimizer.zero_grad(set_to_none=True)
        pair = batches[first:first + 2]
        loss = sum(run.train_loss(run.model(pruner.batch_inputs(b), pruner.batch_graph(b)), b) for b in pair)
        losses.append(run.step(loss / len(pair)))
    return {"loss": sum(losses) / len(losses), "batches": len(batches)}


def worker(args) -> int:
    """One process of a layout: the run, its timings and memory to ``args.worker`` (``-rank-R.json``)."""
    from gnnprune.config import ExperimentConfig
    from gnnprune.copruning import PruneTargets
    from gnnprune.data import load_dataset
    from gnnprune.distributed import init_from_env, launched_by_torchrun, shared_graph, shutdown
    from gnnprune.experiment import build_seed_model, fit_method
    from gnnprune.loader import MiniBatchConfig

    torch.set_num_threads(args.threads)
    world = init_from_env() if launched_by_torchrun() else None
    if args.paired:
        import gnnprune.minibatch
        gnnprune.minibatch.minibatch_step = paired_minibatch_step  # the epoch step train_minibatch calls
    peak = {"Pss": 0.0, "Rss": 0.0}
    done = threading.Event()

    def sample():
        while not done.wait(0.5):
            for field in peak:
                peak[field] = max(peak[field], _memory_gb(field))

    threading.Thread(target=sample, daemon=True).start()
    spec = dataset_spec(args.scale)
    start = time.perf_counter()
    data = load_dataset(spec) if world is None else shared_graph(lambda: load_dataset(spec), world)
    load_s = time.perf_counter() - start
    batch_size = -(-data.num_nodes // args.batches)
    config = ExperimentConfig.for_model("gcn", dataset=spec, targets=PruneTargets(0.5, 0.5, 0.3), epochs=args.epochs,
                                        minibatch=MiniBatchConfig(batch_size, args.loader))
    config = config.overridden(cgp={"prune_start": 1, "prune_end": 3, "update_every": 2})
    model = build_seed_model(config, data, 0)
    polls: list[float] = []
    start = time.perf_counter()
    fitted = fit_method(config, model, data, dataclasses.replace(config.train, seed=0), False, world,
                        should_stop=lambda: polls.append(time.perf_counter()) or False)
    done.set()
    for field in peak:
        peak[field] = max(peak[field], _memory_gb(field))
    epoch_s = [b - a for a, b in zip([start, *polls], polls)]
    rank = 0 if world is None else world.rank
    report = {"rank": rank, "processes": 1 if world is None else world.world_size, "threads": args.threads,
              "dataset": spec, "graph": data.describe(), "batch_size": batch_size, "load_s": load_s,
              "epoch_s": epoch_s, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
              "peak_pss_sampled_gb": peak["Pss"], "test": fitted.result.test,
              "kept_edges": fitted.pruner.kept_edges()}
    Path(f"{args.worker}-rank-{rank}.json").write_text(json.dumps(report, indent=2))
    if world is not None:
        shutdown()
    return 0


def _launch(layout: str, args, folder: Path) -> list[dict]:
    processes, threads = LAYOUTS[layout]
    prefix = folder / f"{layout}-{time.monotonic_ns()}"
    inner = ["-m", "benchmarks.distributed", "--worker", str(prefix), "--threads", str(threads),
             "--scale", str(args.scale), "--batches", str(args.batches), "--epochs", str(args.epochs),
             "--loader", args.loader, *(["--paired"] if layout.endswith("-paired") else [])]
    launcher = [] if processes == 1 else ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                          str(processes)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, *launcher, *inner], check=True, env=env)
    return [json.loads(Path(f"{prefix}-rank-{rank}.json").read_text()) for rank in range(processes)]


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def summarize(runs: dict[str, list[list[dict]]]) -> dict:
    """Per layout: medians over repeats (and processes) of the epoch times and memory."""
    table = {}
    for layout, repeats in runs.items():
        ranks = [rank for repeat in repeats for rank in repeat]
        epoch_time = lambda pick: statistics.median(max(rank["epoch_s"][pick] for rank in repeat)  # noqa: E731
                                                    for repeat in repeats)
        table[layout] = {
            "plain_epoch_s": statistics.median(max(rank["epoch_s"][e] for rank in repeat)
                                               for repeat in repeats
                                               for e in plain_epochs(len(repeat[0]["epoch_s"]))),
            "probe_epoch_s": epoch_time(PROBE_EPOCH),
            "load_s": statistics.median(rank["load_s"] for rank in ranks),
            "peak_rss_gb_per_process": statistics.median(rank["peak_rss_gb"] for rank in ranks),
            "peak_pss_gb_per_process": statistics.median(rank["peak_pss_sampled_gb"] for rank in ranks),
            "test": statistics.median(rank["test"] for rank in ranks),
        }
    return table


def markdown(report: dict) -> str:
    rows = ["| layout | plain epoch (s) | epoch with probe + update (s) | graph load (s) | peak RSS / process (GiB) "
            "| peak PSS / process (GiB) | test accuracy |", "|---|---|---|---|---|---|---|"]
    for layout, s in report["summary"].items():
        processes, threads = LAYOUTS[layout]
        paired = ", 2 batches per step" if layout.endswith("-paired") else ""
        rows.append(f"| {processes} process(es) x {threads} thread(s){paired} | {s['plain_epoch_s']:.4f} | "
                    f"{s['probe_epoch_s']:.4f} | {s['load_s']:.4f} | {s['peak_rss_gb_per_process']:.4f} | "
                    f"{s['peak_pss_gb_per_process']:.4f} | {s['test']:.4f} |")
    head = (f"{report['dataset']} ({report['graph']['nodes']:,} nodes, {report['graph']['undirected_edges']:,} edges), "
            f"{report['batches']} {report['loader']} batches per epoch, {report['epochs']} epochs; {report['cpu']}, torch {report['torch']}, "
            f"{report['repeats']} repeats, medians; {load_note(report['load_average_at_start'])}")
    return head + "\n\n" + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.25, help="fraction of synthetic:products' nodes and edges")
    parser.add_argument("--batches", type=int, default=4, help="batches per epoch (in one process)")
    parser.add_argument("--loader", choices=["random-nodes", "neighbors"], default="random-nodes",
                        help="mini-batch loader (neighbors: fan-outs 10,10)")
    parser.add_argument("--epochs", type=int, default=MIN_EPOCHS,
                        help=f"training epochs, at least {MIN_EPOCHS} (mask updates at epochs 1 and 3)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each layout, alternating")
    parser.add_argument("--out", type=Path, help="folder for distributed.json and distributed.md")
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--layouts", default="1x2,2x1",
                        help=f"comma-separated layouts to compare, of {', '.join(LAYOUTS)}")
    parser.add_argument("--paired", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.out is None:
        parser.error("--out is required")
    args.layouts = [layout for layout in args.layouts.split(",") if layout]
    if not args.layouts or any(layout not in LAYOUTS for layout in args.layouts):
        parser.error(f"--layouts takes some of {', '.join(LAYOUTS)}, got {','.join(args.layouts)}")
    if args.epochs < MIN_EPOCHS:
        parser.error(f"--epochs must be at least {MIN_EPOCHS}, got {args.epochs}")
    report = {"command": "python -m benchmarks.distributed " + " ".join(argv if argv is not None else sys.argv[1:]),
              "cpu": _cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
              "python": platform.python_version(), "scale": args.scale, "batches": args.batches,
              "loader": args.loader, "epochs": args.epochs,
              "repeats": args.repeats, "load_average_at_start": load_average()}
    runs: dict[str, list[list[dict]]] = {layout: [] for layout in args.layouts}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.repeats):
            for layout in args.layouts:
                runs[layout].append(_launch(layout, args, Path(scratch)))
                print(f"{layout}: epochs {[round(t, 2) for t in runs[layout][-1][0]['epoch_s']]}", file=sys.stderr)
    first = runs[args.layouts[0]][0][0]
    report.update(dataset=first["dataset"], graph=first["graph"], summary=summarize(runs), runs=runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "distributed.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "distributed.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
