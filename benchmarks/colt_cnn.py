"""COLT against iterative magnitude pruning (lottery tickets with rewinding) on a CNN.

Both run the same rounds (each removes ``--rate`` of the remaining weights of every conv / linear
layer, down to ``--sparsity``), rewind to the same initialisation and train the ticket alike;
COLT trains two copies per round, each on half of the classes (so a round sees each training
image once per epoch in both methods). Writes one JSON record (per seed and method: test
accuracy, epochs, kept weights, per-round intersections and top-ups) and prints a table.

    python -m benchmarks.colt_cnn --dataset digits --seeds 0,1,2 --out results/colt/cnn_digits.json
    python -m benchmarks.colt_cnn --dataset cifar10 --model resnet20 --sparsity 0.9 --rate 0.4 --train-subset 5000 \
        --test-subset 2000 --epochs 4 --batch-size 128 --lr 0.1 --precision bf16 --channels-last \
        --out results/colt/cnn-cifar10-resnet20.json
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import torch

    from cnn_bridge.colt_tickets import TicketRounds, colt_ticket, imp_ticket
    from cnn_bridge.experiment import IMAGE_DATASETS
    from cnn_bridge.models import build_cnn_model
    from cnn_bridge.train import CNNTrainConfig
    from gnnprune.io import atomic_write_json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits", choices=sorted(IMAGE_DATASETS))
    p.add_argument("--model", default="convnet")
    p.add_argument("--sparsity", type=float, default=0.8)
    p.add_argument("--rate", type=float, default=0.3)
    p.add_argument("--epochs", type=int, default=10, help="epochs of every copy in every round, and of the ticket")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="training arithmetic (bf16: CPU autocast; evaluation stays fp32)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format for training")
    p.add_argument("--train-subset", type=int)
    p.add_argument("--test-subset", type=int)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--data-root", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = IMAGE_DATASETS[args.dataset](args.data_root)
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        subset = data.subset(args.train_subset, args.test_subset, seed=seed)
        train = CNNTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                               augment=args.dataset != "digits", seed=seed, precision=args.precision,
                               channels_last=args.channels_last)
        rounds = TicketRounds(sparsity=args.sparsity, rate=args.rate, round_train=train, ticket_train=train)
        build = lambda: build_cnn_model(args.model, num_classes=subset.num_classes,  # noqa: E731
                                        in_channels=subset.train_x.shape[1])
        for method, fit in (("imp", imp_ticket), ("colt", colt_ticket)):
            start = time.perf_counter()
            record = fit(build, subset, rounds, seed=seed, progress=False)
            record.pop("engine")
            runs.append({"method": method, "seed": seed, "time_s": time.perf_counter() - start, **record})
            print(f"{method} seed {seed}: test {record['test_accuracy']:.4f}, kept {record['kept']}/{record['total']}, "
                  f"epochs {record['epochs']}", file=sys.stderr)
    summary = {}
    for method in ("imp", "colt"):
        accs = [r["test_accuracy"] for r in runs if r["method"] == method]
        summary[method] = {"mean": statistics.mean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0}
        print(f"{method}: test {summary[method]['mean']:.4f} ± {summary[method]['std']:.4f} over {len(accs)} seeds")
    atomic_write_json(args.out, {"command": "python -m benchmarks.colt_cnn " + " ".join(argv or sys.argv[1:]),
                                 "torch": torch.__version__, "python": platform.python_version(),
                                 "args": {k: str(v) for k, v in vars(args).items()}, "summary": summary,
                                 "runs": runs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
