"""Filter-criteria benchmark: every criterion on one model, one MAC budget, the same pretrained
weights per seed, the same fine-tuning.

Per seed a dense model is trained once on a class-stratified CIFAR-10 subset (saved as
OUT/pretrained-seed-K.pt); each criterion then prunes it to the MAC target, fine-tunes under
the masks and is compacted (:func:`cnn_bridge.prune_flow.run_prune`). ``--techniques`` adds rows
that are not criteria: ``asc`` (the ASCP flow, uniform allocation), ``snf-CRITERION`` (the SNF
allocation with that criterion) and ``ghost`` (Ghost-ResNet of the same depth trained from scratch
on the same images for the pretraining plus fine-tuning epochs at the pretraining learning rate,
no pruning). Writes OUT/criteria.json
(every run's record), OUT/criteria.md (the command and a table) and OUT/criteria.png.

    python benchmarks/criteria.py --model resnet20 --mac-reduction 0.5 --pretrain-epochs 3 \
        --finetune-epochs 1 --train-subset 2000 --test-subset 1000 --seeds 0,1,2 --threads 1 \
        --out results/criteria
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from cnn_bridge.counting import count_model
from cnn_bridge.criteria import CRITERIA
from cnn_bridge.models import CNN_MODELS, build_cnn_model
from cnn_bridge.prune_flow import Allocation, PruneFlow, PruneRunConfig, run_prune
from cnn_bridge.train import CNNTrainConfig, train_cnn
from gnnprune.io import atomic_torch_save, atomic_write_bytes, atomic_write_json
from gnnprune.machine import load_average, load_note

#: The read-only data folder beside a checkout of this repository, if there is one.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--mac-reduction", type=float, default=0.5)
    p.add_argument("--pretrain-epochs", type=int, default=3)
    p.add_argument("--pretrain-lr", type=float, default=0.1)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-subset", type=int, default=2000)
    p.add_argument("--test-subset", type=int, default=1000)
    p.add_argument("--feature-images", type=int, default=128)
    p.add_argument("--sensitivity-images", type=int, default=250)
    p.add_argument("--latency-repeats", type=int, default=3)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--criteria", default=",".join(CRITERIA))
    p.add_argument("--techniques", default="",
                   help="extra rows: asc, snf-CRITERION, ghost (comma-separated; default none)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", type=Path, default=SHARED_DATA if SHARED_DATA.is_dir() else None,
                   help="folder holding cifar10/cifar10-jpeg.tar.gz (default: ../shared/data when it exists)")
    p.add_argument("--out", type=Path, default=Path("results/criteria"))
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/criteria.json")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.criteria = [name for name in args.criteria.split(",") if name]
    for name in args.criteria:
        if name not in CRITERIA:
            p.error(f"unknown criterion {name!r}; choose from {', '.join(CRITERIA)}")
    args.techniques = [name for name in args.techniques.split(",") if name]
    for name in args.techniques:
        inner = name.removeprefix("snf-")
        if name not in ("asc", "ghost") and not (name.startswith("snf-") and inner in CRITERIA and inner != "sensitivity"):
            p.error(f"unknown technique {name!r}; choose from asc, ghost, snf-CRITERION (a criterion but sensitivity)")
        if name == "ghost" and f"ghost_{args.model}" not in CNN_MODELS:
            p.error(f"no Ghost version of {args.model!r}; ghost needs resnet20 or resnet56")
    if (args.out / "criteria.json").exists() and not args.overwrite:
        p.error(f"{args.out / 'criteria.json'} exists; pass --overwrite or choose another --out")
    return args


def plain_args(args: argparse.Namespace) -> dict:
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}


def _mean_or_none(values: list) -> float | None:
    return None if any(v is None for v in values) else statistics.fmean(values)


def summarise(runs: list[dict], labels: list[str]) -> list[dict]:
    rows = []
    for name in labels:
        mine = [r for r in runs if r.get("label", r["config"].get("criterion")) == name]
        if not mine:
            continue
        after = [r["accuracy"]["masked_after_finetune"] for r in mine]
        before = [r["accuracy"]["masked_before_finetune"] for r in mine]
        diffs = [r.get("compact_max_abs_diff") for r in mine]
        rows.append({
            "criterion": name, "seeds": [r["seed"] for r in mine],
            "after": after, "before": before,
            "after_mean": statistics.fmean(after), "after_std": statistics.stdev(after) if len(after) > 1 else 0.0,
            "before_mean": _mean_or_none(before),
            "dense_mean": statistics.fmean(r["accuracy"]["dense"] for r in mine),
            "macs_ratio": [r["counts"]["macs"]["ratio"] for r in mine],
            "params_ratio": [r["counts"]["params"]["ratio"] for r in mine],
            "score_s": _mean_or_none([r["times_s"].get("score", 0.0) + r["times_s"].get("allocate", 0.0)
                                      if "score" in r["times_s"] else None for r in mine]),
            "speedup_64": [r["latency_s"]["batch_64"]["speedup"] for r in mine if "latency_s" in r],
            "max_abs_diff": None if None in diffs else max(diffs),
        })
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(command: str, args: argparse.Namespace, rows: list[dict], total_s: float) -> str:
    lines = [f"# Filter criteria benchmark ({args.model}, {args.mac_reduction:.0%} MAC reduction)", "", "Command:", "",
             "```", command, "```", "",
             f"CIFAR-10 subset: {args.train_subset} train / {args.test_subset} test images (class-stratified, drawn "
             f"per seed); dense pretraining {args.pretrain_epochs} epochs (lr {args.pretrain_lr}), fine-tuning "
             f"{args.finetune_epochs} epoch(s) (lr {args.finetune_lr}) under the channel masks; data-driven criteria "
             f"see {args.feature_images} training images; {args.threads} thread(s); "
             f"{load_note(getattr(args, 'load_at_start', None)) or 'machine load not recorded'}; the batch-64 speedup is masked vs compact latency, "
             f"measured alternately in the same run. Total {total_s:.0f} s.", "",
             "| criterion | accuracy after fine-tune mean ± std | per seed | before fine-tune (mean) | dense (mean) | "
             "MACs kept | params kept | score + allocate s | batch-64 speedup | max abs diff compact vs masked |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(
            f"| {row['criterion']} | {row['after_mean']:.4f} ± {row['after_std']:.4f} | "
            f"{', '.join(f'{a:.4f}' for a in row['after'])} | {_fmt(row['before_mean'], '.4f')} | {row['dense_mean']:.4f} | "
            f"{', '.join(f'{m:.4f}' for m in sorted(set(row['macs_ratio'])))} | "
            f"{', '.join(f'{m:.4f}' for m in sorted(set(row['params_ratio'])))} | {_fmt(row['score_s'], '.2f')} | "
            f"{', '.join(f'{s:.2f}' for s in row['speedup_64']) or 'n/a'} | {_fmt(row['max_abs_diff'], '.2e')} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["before_mean"] or 0.0 for r in rows], width=0.4, label="masked, before fine-tune")
    ax.bar([x + 0.2 for x in xs], [r["after_mean"] for r in rows], width=0.4, yerr=[r["after_std"] for r in rows],
           label="after fine-tune (mean ± std)")
    if rows:
        ax.axhline(statistics.fmean(r["dense_mean"] for r in rows), color="grey", linestyle="--", label="dense")
    ax.set_xticks(list(xs), [r["criterion"] for r in rows])
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def ghost_run(args: argparse.Namespace, subset, seed: int, config: CNNTrainConfig) -> dict:
    """Ghost-ResNet trained from scratch on the seed's subset; a record shaped like :func:`run_prune`'s."""
    name = f"ghost_{args.model}"
    torch.manual_seed(seed)
    model = build_cnn_model(name, num_classes=subset.num_classes, in_channels=subset.train_x.shape[1])
    dense = count_model(build_cnn_model(args.model, num_classes=subset.num_classes), tuple(subset.train_x.shape[1:]))
    counts = count_model(model, tuple(subset.train_x.shape[1:]))
    train = train_cnn(model, subset, config, description=f"train {name} s{seed}")
    ratio = {key: {"dense": dense[key]["dense"], "pruned": counts[key]["dense"],
                   "ratio": counts[key]["dense"] / dense[key]["dense"]} for key in ("params", "macs")}
    return {"label": "ghost", "config": {"model": name, "train": vars(config)}, "seed": seed, "counts": ratio,
            "accuracy": {"masked_before_finetune": None, "masked_after_finetune": train["test_accuracy"]},
            "finetune": train, "times_s": {}}


def main(argv=None) -> int:
    args = parse_args(argv)
    args.load_at_start = load_average()
    command = "python benchmarks/criteria.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    torch.set_num_threads(args.threads)
    from cnn_bridge.data import load_cifar10

    data = load_cifar10(args.data_root)
    runs: list[dict] = []
    start = time.perf_counter()
    labels = args.criteria + args.techniques
    bar = tqdm(total=len(args.seeds) * len(labels), desc="criteria runs")
    for seed in args.seeds:
        training = lambda epochs, lr: CNNTrainConfig(epochs=epochs, batch_size=args.batch_size, lr=lr, seed=seed)  # noqa: E731
        subset = data.subset(args.train_subset, args.test_subset, seed=seed)
        torch.manual_seed(seed)
        model = build_cnn_model(args.model, num_classes=subset.num_classes, in_channels=subset.train_x.shape[1])
        pretrain = train_cnn(model, subset, training(args.pretrain_epochs, args.pretrain_lr), description=f"pretrain s{seed}")
        checkpoint = args.out / f"pretrained-seed-{seed}.pt"
        atomic_torch_save(model.state_dict(), checkpoint)
        for name in labels:
            if name == "ghost":
                record = ghost_run(args, subset, seed, training(args.pretrain_epochs + args.finetune_epochs,
                                                                args.pretrain_lr))
                record["accuracy"]["dense"] = pretrain["test_accuracy"]
                runs.append(record)
                bar.update(1)
                continue
            technique = {"criterion": name} if name in CRITERIA else (
                {"flow": PruneFlow.ASC} if name == "asc" else
                {"criterion": name.removeprefix("snf-"), "allocation": Allocation.SNF})
            config = PruneRunConfig(model=args.model, mac_reduction=args.mac_reduction,
                                    checkpoint=str(checkpoint), finetune=training(args.finetune_epochs, args.finetune_lr),
                                    feature_images=args.feature_images, sensitivity_images=args.sensitivity_images,
                                    latency_repeats=args.latency_repeats, train_subset=args.train_subset,
                                    test_subset=args.test_subset, **technique)
            record = run_prune(config, data, None, progress=True)
            record["pretrain"] = pretrain
            record["label"] = name
            runs.append(record)
            bar.update(1)
            atomic_write_json(args.out / "criteria.json", {"command": command, "args": plain_args(args),
                                                           "runs": runs, "total_time_s": time.perf_counter() - start})
    bar.close()
    total = time.perf_counter() - start
    rows = summarise(runs, labels)
    atomic_write_json(args.out / "criteria.json", {"command": command, "args": plain_args(args),
                                                   "runs": runs, "rows": rows, "total_time_s": total})
    atomic_write_bytes(args.out / "criteria.md", markdown(command, args, rows, total).encode())
    plot(rows, args.out / "criteria.png")
    print(markdown(command, args, rows, total))
    return 0


if __name__ == "__main__":
    from gnnprune.machine import apply_malloc_mode

    apply_malloc_mode()  # may re-execute this script once with huge pages on ($GNNPRUNE_MALLOC)
    sys.exit(main())
