"""Wall-clock cost of checkpoints, as a fraction of training time.

Trains one CGP run (GCN, 90% weights / 50% edges / 50% features) and checkpoints after
*every* epoch, timing each save (build the state, serialise, write, fsync, rename) and each
epoch without its save. The overhead of checkpointing every N epochs is then
``save_time / (N * epoch_time)``; all figures come from this one run. Prints JSON.

    python -m benchmarks.checkpoint_overhead --dataset cora --epochs 200 --threads 1
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cora")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from gnnprune.checkpoint import save_checkpoint
    from gnnprune.copruning import CoPruner, PruneTargets
    from gnnprune.data import load_dataset
    from gnnprune.methods import CGP, CGPConfig
    from gnnprune.nn import build_model
    from gnnprune.training import TrainConfig, train

    data = load_dataset(args.dataset)
    torch.manual_seed(0)
    model = build_model("gcn", data.num_features, data.num_classes, args.hidden)
    pruner = CoPruner(model, data, learn_edge_weights=True, learn_feature_gates=True)
    cgp = CGP(CGPConfig(prune_start=args.epochs // 20, prune_end=3 * args.epochs // 4), PruneTargets(0.9, 0.5, 0.5))
    config = TrainConfig(epochs=args.epochs, pseudo_label_weight=0.3, pseudo_label_warmup=args.epochs // 4,
                         gate_lr=0.1)
    saves: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "checkpoint.pt"

        def save(state: dict) -> None:
            start = time.perf_counter()
            save_checkpoint(state, path)
            saves.append(time.perf_counter() - start)

        start = time.perf_counter()
        result = train(model, data, pruner, cgp, config, progress=False, checkpoint_every=1, on_checkpoint=save)
        total = time.perf_counter() - start
        size = path.stat().st_size
    # the state itself is built inside train() before on_checkpoint; time it separately
    from gnnprune.training import TrainingRun, make_optimizer, training_state

    run = TrainingRun(model, data, pruner, make_optimizer(model, pruner, config), config)
    build = []
    for _ in range(20):
        start = time.perf_counter()
        training_state(run, cgp, result.history, None, 0.0)
        build.append(time.perf_counter() - start)
    save_s = statistics.median(saves) + statistics.median(build)
    epoch_s = (total - sum(saves) - args.epochs * statistics.median(build)) / args.epochs
    report = {
        "command": "python -m benchmarks.checkpoint_overhead " + " ".join(sys.argv[1:] if argv is None else argv),
        "dataset": args.dataset, "hidden": args.hidden, "epochs": args.epochs, "threads": args.threads,
        "checkpoint_bytes": size, "save_s_median": save_s, "epoch_s_mean": epoch_s,
        "overhead_every": {str(n): save_s / (n * epoch_s) for n in (1, 10, 50)},
        "test": result.test,
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    from gnnprune.machine import apply_malloc_mode

    apply_malloc_mode()  # may re-execute this script once with huge pages on ($GNNPRUNE_MALLOC)
    main()
