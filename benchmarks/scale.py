"""CGP at the sizes of ogbn-arxiv (full-batch) and ogbn-products (mini-batch), on synthetic graphs.

* ``arxiv``: ``synthetic:arxiv`` (169,343 nodes, 1,166,243 undirected edges, 128 features,
  40 classes, Zipf-skewed degrees): generation time, then a real :func:`gnnprune.training.train`
  run of CGP (GCN 2x256, learned edge weights and feature gates) whose epochs include the
  evaluation and mask updates (2 updates in 12 epochs, more than the default schedule's 15 in
  200); reports the mean epoch time and the peak RSS, and how learnable the labels are
  (nearest class centroid of ``X``, ``ÂX``, ``Â²X``; chance is 1/40).
* ``products``: ``synthetic:products`` (2,449,029 nodes, 61,859,140 undirected edges, 100
  features, 47 classes): generation time and RSS, one CGP mask update (probe over batches
  holding every edge), one mini-batch training epoch over the kept graph (time, edges/s) and,
  with ``--evaluate``, one full-graph evaluation; peak RSS throughout.

Each size runs in its own subprocess (peak RSS is per process). A watchdog stops the
process, recording why, if its RSS passes ``--rss-limit-gb`` or the machine's available
memory falls under 2 GiB: there is no swap, so stopping beats being killed.

    python -m benchmarks.scale --size arxiv --threads 1 --out results/scale
    python -m benchmarks.scale --size products --threads 1 --out results/scale
    python -m benchmarks.scale --size quick --out /tmp/scale          # small smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from gnnprune.machine import load_average, load_note, malloc_note

QUICK = "synthetic:num_nodes=20000,num_edges=100000,num_features=32,num_classes=5,degree_skew=0.6,num_val=2000,num_test=4000"


def _rss_gb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _available_gb() -> float:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _watchdog(limit_gb: float, report: dict, out: Path) -> None:
    """Stop the process (exit 3) before it can exhaust the machine's memory."""
    def watch():
        while True:
            rss, available = _rss_gb(), _available_gb()
            if rss > limit_gb or available < 2.0:
                report["stopped"] = f"watchdog: RSS {rss:.2f} GB, available {available:.2f} GB (limit {limit_gb} GB)"
                report["peak_rss_gb"] = _peak_gb()
                out.write_text(json.dumps(report, indent=2) + "\n")
                os._exit(3)
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()


def _timed(report: dict, key: str, fn):
    start = time.perf_counter()
    value = fn()
    report[key + "_s"] = time.perf_counter() - start
    report[key + "_peak_rss_gb"] = _peak_gb()
    return value


def nearest_centroid_accuracy(data) -> dict[str, float]:
    """Are the labels learnable? Test accuracy of the nearest train-class centroid of ``X``, ``ÂX``, ``Â²X``.

    No training; a GCN-like propagation with a trivial classifier, so a floor for what a GCN can reach.
    """
    from gnnprune.graph import MaskedGraph

    op = MaskedGraph.full(data.edges).gcn_operator()
    result, features = {}, data.x
    for name in ("X", "AX", "A2X"):
        centroids = torch.stack([features[data.train_mask & (data.y == c)].mean(0) for c in range(data.num_classes)])
        pred = torch.cdist(features[data.test_mask], centroids).argmin(1)
        result[name] = float((pred == data.y[data.test_mask]).float().mean())
        features = op @ features
    return result


def task_arxiv(spec: str, report: dict, epochs: int = 12) -> None:
    from gnnprune.copruning import CoPruner, PruneTargets
    from gnnprune.data import load_dataset
    from gnnprune.methods import CGP, CGPConfig
    from gnnprune.nn import build_model
    from gnnprune.training import TrainConfig, train

    data = _timed(report, "generate", lambda: load_dataset(spec))
    report["graph"] = data.describe()
    report["nearest_centroid_test_acc"] = nearest_centroid_accuracy(data)
    torch.manual_seed(0)
    model = build_model("gcn", data.num_features, data.num_classes, 256, 2, 0.5)
    pruner = CoPruner(model, data, learn_edge_weights=True, learn_feature_gates=True)
    cgp = CGP(CGPConfig(prune_start=0, prune_end=epochs - 2, update_every=epochs - 2), PruneTargets(0.9, 0.5, 0.5))
    config = TrainConfig(epochs=epochs, pseudo_label_weight=0.3, pseudo_label_warmup=epochs // 4, gate_lr=0.1)
    result = _timed(report, "train", lambda: train(model, data, pruner, cgp, config, progress=True))
    report.update(epochs=epochs, mask_updates=len(result.updates), epoch_s=result.train_time_s / epochs,
                  final_sparsity={k: pruner.sparsity_report()[k] for k in ("weights", "edges", "features")},
                  val=result.val, test=result.test)


def task_products(spec: str, report: dict, batch_size: int, evaluate_graph: bool) -> None:
    from gnnprune.copruning import PruneTargets
    from gnnprune.data import load_dataset
    from gnnprune.methods import CGPConfig
    from gnnprune.loader import MiniBatchConfig, NodeBatch
    from gnnprune.minibatch import MiniBatchCoPruner, MiniBatchRun
    from gnnprune.nn import build_model
    from gnnprune.training import TrainConfig, evaluate, make_optimizer

    data = _timed(report, "generate", lambda: load_dataset(spec))
    report["graph"] = data.describe()
    report["rss_after_generate_gb"] = _rss_gb()
    torch.manual_seed(0)
    model = build_model("gcn", data.num_features, data.num_classes, 256, 2, 0.5)
    pruner = _timed(report, "build_pruner", lambda: MiniBatchCoPruner(
        model, data, MiniBatchConfig(batch_size), learn_edge_weights=True, learn_feature_gates=True))
    config = TrainConfig(epochs=1, pseudo_label_weight=0.0, gate_lr=0.1)
    optimizer = make_optimizer(model, pruner, config)
    run = MiniBatchRun(model, data, pruner, optimizer, config)

    rules = CGPConfig()  # the update CGP makes: its edge ranking and feature score

    def update():
        probe = pruner.probe(run.train_loss)
        return pruner.update(PruneTargets(0.45, 0.25, 0.25), 0.1, probe, optimizer,
                             edge_ranking=rules.edge_ranking, feature_score=rules.feature_score)

    _timed(report, "mask_update", update)
    report["kept_edges"] = pruner.kept_edges()
    seen = []

    def epoch():
        model.train()
        for batch in pruner.batches():
            batch: NodeBatch
            optimizer.zero_grad(set_to_none=True)
            loss = run.train_loss(model(pruner.batch_inputs(batch), pruner.batch_graph(batch)), batch)
            loss.backward()
            pruner.mask_gradients()
            optimizer.step()
            pruner.apply_weight_masks()
            seen.append(batch.edges.num_edges)

    _timed(report, "train_epoch", epoch)
    report.update(batches=len(seen), batch_edges=sum(seen),
                  kept_edges_per_s=report["kept_edges"] / report["train_epoch_s"],
                  batch_edges_per_s=sum(seen) / report["train_epoch_s"])
    if evaluate_graph:
        _, scores = _timed(report, "evaluate_full_graph", lambda: evaluate(model, pruner, data))
        report["scores_after_one_epoch"] = scores


def _warm_up() -> None:
    """Pay torch's lazy imports (the first Adam step loads ``torch._dynamo``, ~5 s) outside the timings."""
    param = torch.nn.Parameter(torch.zeros(2))
    param.grad = torch.ones(2)
    torch.optim.Adam([param]).step()


def _run_task(args) -> int:
    torch.set_num_threads(args.threads)
    _warm_up()
    out = Path(args.task_out)
    report: dict = {"size": args.size, "threads": args.threads, "command": args.command, "allocator": malloc_note(),
                    "available_gb_at_start": _available_gb(), "load_average_at_start": load_average()}
    _watchdog(args.rss_limit_gb, report, out)
    spec = {"arxiv": "synthetic:arxiv", "products": "synthetic:products", "quick": QUICK}[args.size]
    if args.size == "products":
        task_products(spec, report, args.batch_size, args.evaluate)
    else:
        task_arxiv(spec, report)
    report["peak_rss_gb"] = _peak_gb()
    out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def markdown(report: dict) -> str:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    note = load_note(report.get("load_average_at_start"))
    machine = f"; {note}" if note else ""
    lines = [f"# CGP at {report['size']} size", "", f"`{report['command']}` ({report['threads']} thread(s){machine})", ""]
    if "graph" in report:
        g = report["graph"]
        lines += [f"Graph: {g['nodes']:,} nodes, {g['undirected_edges']:,} undirected edges, {g['features']} features, "
                  f"{g['classes']} classes.", ""]
    lines += ["| measurement | value |", "|---|---|"]
    for key, value in report.items():
        if key not in ("graph", "command", "size", "threads"):
            lines.append(f"| {key} | {fmt(value)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("arxiv", "products", "quick"), required=True)
    parser.add_argument("--out", type=Path, default=Path("results/scale"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=500_000, help="nodes per batch (products)")
    parser.add_argument("--evaluate", action="store_true", help="also time one full-graph evaluation (products)")
    parser.add_argument("--rss-limit-gb", type=float, default=20.0)
    parser.add_argument("--task-out", help=argparse.SUPPRESS)
    parser.add_argument("--command", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.task_out:
        return _run_task(args)

    from gnnprune.io import atomic_write_bytes, atomic_write_json

    command = "python -m benchmarks.scale " + " ".join(sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    task_out = args.out / f".{args.size}.partial.json"
    cmd = [sys.executable, "-m", "benchmarks.scale", "--size", args.size, "--threads", str(args.threads),
           "--batch-size", str(args.batch_size), "--rss-limit-gb", str(args.rss_limit_gb),
           "--task-out", str(task_out), "--command", command] + (["--evaluate"] if args.evaluate else [])
    proc = subprocess.run(cmd)
    report = json.loads(task_out.read_text()) if task_out.exists() else {"size": args.size, "command": command,
                                                                         "threads": args.threads}
    if proc.returncode != 0 and "stopped" not in report:
        report["stopped"] = f"exit status {proc.returncode}"
    task_out.unlink(missing_ok=True)
    atomic_write_json(args.out / f"{args.size}.json", report)
    atomic_write_bytes(args.out / f"{args.size}.md", markdown(report).encode())
    print(markdown(report))
    return 0 if "stopped" not in report else 1


if __name__ == "__main__":
    from gnnprune.machine import apply_malloc_mode

    apply_malloc_mode()  # may re-execute this script once with huge pages on ($GNNPRUNE_MALLOC)
    sys.exit(main())
