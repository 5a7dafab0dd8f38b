"""Early-bird tickets on a CNN: the prune flow with and without the monitor ending pre-training.

For every seed, ``gnnprune cnn prune`` runs twice with the same options: once pre-training for
all ``--pretrain-epochs``, once with the early-bird monitor (``--window``, ``--threshold``,
``--watch``), which ends pre-training when the watched masks have settled; both then prune to the
same MAC target with the same criterion and fine-tune alike. Each run's folder is kept under
``--runs`` (a finished run is not repeated: rerun the command to resume). Writes one JSON record
(per run: accuracies, epochs, the monitor's record, times) and prints a markdown table.

    python -m benchmarks.early_bird_cnn --dataset digits --model convnet --pretrain-epochs 30 \\
        --runs runs/early-bird-digits --out results/early-bird/cnn-digits.json
    python -m benchmarks.early_bird_cnn --dataset cifar10 --model resnet20 --train-subset 10000 \\
        --pretrain-epochs 30 --finetune-epochs 5 --precision bf16 --channels-last --threads 1 \\
        --runs runs/early-bird-cifar --out results/early-bird/cnn-cifar10-resnet20.json
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
from pathlib import Path

MONITOR = ("off", "on")


def prune_args(args: argparse.Namespace, seed: int, monitor: str, out: Path) -> list[str]:
    """The ``gnnprune cnn prune`` arguments of one run."""
    argv = ["cnn", "prune", "--model", args.model, "--dataset", args.dataset, "--criterion", args.criterion,
            "--mac-reduction", str(args.mac_reduction), "--pretrain-epochs", str(args.pretrain_epochs),
            "--pretrain-lr", str(args.pretrain_lr), "--finetune-epochs", str(args.finetune_epochs),
            "--finetune-lr", str(args.finetune_lr), "--batch-size", str(args.batch_size), "--precision", args.precision,
            "--seed", str(seed), "--threads", str(args.threads), "--no-progress", "--out", str(out)]
    for flag, value in (("--train-subset", args.train_subset), ("--test-subset", args.test_subset),
                        ("--data-root", args.data_root)):
        if value is not None:
            argv += [flag, str(value)]
    if args.channels_last:
        argv.append("--channels-last")
    if monitor == "on":
        argv += ["--early-bird-window", str(args.window), "--early-bird-threshold", str(args.threshold),
                 "--early-bird-watch", args.watch]
    return argv


def run_record(metrics: dict, seed: int, monitor: str) -> dict:
    """The figures of one finished run that the table compares."""
    pretrain, finetune = metrics["pretrain"], metrics["finetune"]
    early_bird = pretrain.get("early_bird")
    return {"seed": seed, "monitor": monitor, "dense_accuracy": metrics["accuracy"]["dense"],
            "masked_before_finetune": metrics["accuracy"]["masked_before_finetune"],
            "finetuned_accuracy": metrics["accuracy"]["masked_after_finetune"],
            "pretrain_epochs": pretrain["epochs_run"], "finetune_epochs": finetune["epochs_run"],
            "epochs": pretrain["epochs_run"] + finetune["epochs_run"],
            "pretrain_time_s": pretrain["train_time_s"], "finetune_time_s": finetune["train_time_s"],
            "fired_epoch": None if early_bird is None else early_bird["fired_epoch"],
            "early_bird": early_bird and {k: v for k, v in early_bird.items() if k != "distances"},
            "distances": early_bird and early_bird["distances"],
            "macs": metrics["counts"]["macs"]}


def _mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarize(runs: list[dict]) -> dict:
    """Mean ± sample std over seeds per monitor setting."""
    summary = {}
    for monitor in MONITOR:
        members = [r for r in runs if r["monitor"] == monitor]
        if members:
            summary[monitor] = {"seeds": len(members), **{key: _mean_std([r[key] for r in members]) for key in (
                "dense_accuracy", "finetuned_accuracy", "pretrain_epochs", "epochs", "pretrain_time_s")}}
    return summary


def markdown(summary: dict) -> str:
    lines = ["| monitor | seeds | accuracy after pre-training | after pruning and fine-tuning | pre-training epochs "
             "| epochs in all | pre-training s |", "|---|---|---|---|---|---|---|"]
    for monitor, s in summary.items():
        cell = lambda key, digits=4: f"{s[key]['mean']:.{digits}f} ± {s[key]['std']:.{digits}f}"  # noqa: E731
        lines.append(f"| {monitor} | {s['seeds']} | {cell('dense_accuracy')} | {cell('finetuned_accuracy')} | "
                     f"{cell('pretrain_epochs', 1)} | {cell('epochs', 1)} | {cell('pretrain_time_s', 1)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    from gnnprune.cli import main as gnnprune_main
    from gnnprune.io import atomic_write_json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--model", default="convnet")
    p.add_argument("--criterion", default="l1")
    p.add_argument("--mac-reduction", type=float, default=0.5)
    p.add_argument("--pretrain-epochs", type=int, default=30)
    p.add_argument("--pretrain-lr", type=float, default=0.1)
    p.add_argument("--finetune-epochs", type=int, default=5)
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--threshold", type=float, default=0.1)
    p.add_argument("--watch", default="channels,elements")
    p.add_argument("--train-subset", type=int)
    p.add_argument("--test-subset", type=int)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", type=Path)
    p.add_argument("--runs", type=Path, required=True, help="folder of the runs (finished ones are kept and skipped)")
    p.add_argument("--out", type=Path, required=True, help="JSON record")
    args = p.parse_args(argv)
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for monitor in MONITOR:
            folder = args.runs / f"early-bird-{monitor}-s{seed}"
            metrics_file = folder / "metrics.json"
            if not (metrics_file.exists() and json.loads(metrics_file.read_text()).get("status") == "done"):
                if folder.exists():  # an interrupted run: start it again
                    shutil.rmtree(folder)
                if gnnprune_main(prune_args(args, seed, monitor, folder)) != 0:
                    return 1
            runs.append(run_record(json.loads(metrics_file.read_text()), seed, monitor))
            print(f"seed {seed} monitor {monitor}: fine-tuned {runs[-1]['finetuned_accuracy']:.4f} after "
                  f"{runs[-1]['epochs']} epochs", file=sys.stderr)
    summary = summarize(runs)
    atomic_write_json(args.out, {"command": "python -m benchmarks.early_bird_cnn " + " ".join(argv or sys.argv[1:]),
                                 "torch": torch.__version__, "python": platform.python_version(),
                                 "machine": platform.machine(), "args": {k: str(v) for k, v in vars(args).items()},
                                 "summary": summary, "runs": runs})
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
