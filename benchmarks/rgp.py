"""RGP benchmark: dense vs RGP vs unoptimised random regular graph vs random unstructured mask.

Every variant gets the same budget (model, CIFAR-10 subset, epochs, seeds); the masked variants
keep the same weights per layer (density ``rho``). Writes OUT/rgp.json (every run), OUT/rgp.md
(the command, a table) and OUT/aspl.png (test accuracy vs mean layer ASPL).

    python benchmarks/rgp.py --model resnet20 --density 0.5 --epochs 4 --train-subset 5000 \
        --test-subset 2000 --seeds 0,1,2 --threads 1 --out results/rgp
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from cnn_bridge.experiment import MASKS, RGPRunConfig, run_rgp
from cnn_bridge.rgp import RGPConfig
from cnn_bridge.train import CNNTrainConfig
from gnnprune.io import atomic_write_bytes, atomic_write_json
from gnnprune.machine import load_average, load_note

#: The read-only data folder beside a checkout of this repository, if there is one.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

VARIANTS = ("dense", "rgp", "random-regular", "random-element")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--groups", type=int, default=64)
    p.add_argument("--density", type=float, default=0.5)
    p.add_argument("--swaps", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--train-subset", type=int, default=5000)
    p.add_argument("--test-subset", type=int, default=2000)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", type=Path, default=SHARED_DATA if SHARED_DATA.is_dir() else None,
                   help="folder holding cifar10/cifar10-jpeg.tar.gz (default: ../shared/data when it exists)")
    p.add_argument("--out", type=Path, default=Path("results/rgp"))
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/rgp.json")
    p.add_argument("--render", action="store_true",
                   help="only rewrite OUT/rgp.md and OUT/aspl.png from OUT/rgp.json (no training)")
    args = p.parse_args(argv)
    if args.render:
        return args
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.variants = args.variants.split(",")
    for variant in args.variants:
        if variant not in MASKS:
            p.error(f"unknown variant {variant!r}; choose from {', '.join(MASKS)}")
    if (args.out / "rgp.json").exists() and not args.overwrite:
        p.error(f"{args.out / 'rgp.json'} exists; pass --overwrite or choose another --out")
    return args


def mean_aspl(run: dict) -> float | None:
    """Mean over pruned layers of the ASPL of the mask's graph (1.0: complete graph, dense)."""
    if run["config"]["mask"] == "dense":
        return 1.0
    if run["config"]["mask"] == "random-element":
        return None  # not a graph mask
    return statistics.fmean(layer["aspl_after"] for layer in run["layers"])


def summarise(runs: list[dict], variants: list[str]) -> list[dict]:
    rows = []
    for variant in variants:
        mine = [r for r in runs if r["config"]["mask"] == variant]
        if not mine:
            continue
        acc = [r["test_accuracy"] for r in mine]
        aspl = mean_aspl(mine[0])
        rows.append({
            "variant": variant, "seeds": [r["seed"] for r in mine], "test_accuracy": acc,
            "mean": statistics.fmean(acc), "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "density_pruned_layers": mine[0]["density"]["pruned_layers"],
            "params_ratio": mine[0]["counts"]["params"]["ratio"], "macs_ratio": mine[0]["counts"]["macs"]["ratio"],
            "mean_aspl": [mean_aspl(r) for r in mine] if aspl is not None else None,
            "mean_aspl_before": ([statistics.fmean(l["aspl_before"] for l in r["layers"]) for r in mine]
                                 if variant in ("rgp", "random-regular") else None),
            "train_time_s": [r["train_time_s"] for r in mine],
        })
    return rows


def markdown(command: str, args: argparse.Namespace, rows: list[dict], runs: list[dict], total_s: float) -> str:
    lines = [f"# RGP benchmark ({args.model}, density {args.density})", "", "Command:", "", "```",
             command, "```", "",
             f"CIFAR-10 subset: {args.train_subset} train / {args.test_subset} test images (class-stratified, "
             f"drawn per seed), {args.epochs} epochs, batch {args.batch_size}, SGD lr {args.lr} cosine, "
             f"{args.threads} thread(s); {load_note(getattr(args, 'load_at_start', None)) or 'machine load not recorded'}; "
             f"{len(runs)} of {len(args.seeds) * len(args.variants)} runs done in {total_s:.0f} s.", "",
             "| variant | test accuracy mean ± std | per seed | density (pruned layers) | params | MACs | "
             "mean layer ASPL (before → after) | train s per run |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        per_seed = ", ".join(f"{a:.4f}" for a in row["test_accuracy"])
        if row["mean_aspl_before"] is not None:
            aspl = ", ".join(f"{b:.4f} → {a:.4f}" for b, a in zip(row["mean_aspl_before"], row["mean_aspl"]))
        else:
            aspl = "1 (complete)" if row["variant"] == "dense" else "n/a (no graph)"
        times = ", ".join(f"{t:.0f}" for t in row["train_time_s"])
        lines.append(f"| {row['variant']} | {row['mean']:.4f} ± {row['std']:.4f} | {per_seed} | "
                     f"{row['density_pruned_layers']:.4f} | {row['params_ratio']:.4f} | {row['macs_ratio']:.4f} | "
                     f"{aspl} | {times} |")
    lines += comparisons(runs)
    rgp_runs = [r for r in runs if r["config"]["mask"] == "rgp"]
    if rgp_runs:
        layers = rgp_runs[0]["layers"]
        saturated = sum(2 * layer["k"] >= layer["n"] for layer in layers)
        lowered = sum(layer["aspl_after"] < layer["aspl_before"] for layer in layers)
        note = f"Swaps lowered the ASPL in {lowered} of {len(layers)} layers (seed {rgp_runs[0]['seed']})."
        if saturated:
            note += (f" {saturated} of {len(layers)} layers have 2k >= n: there any two groups share a neighbour, "
                     f"so every k-regular graph has diameter <= 2 and the same ASPL 2 - k/(n-1); rewiring cannot "
                     f"change it.")
        lines += ["", note]
        lines += ["", f"Per-layer graphs of RGP, seed {rgp_runs[0]['seed']}:", "",
                  "| layer | C_out × C_in | n | k | density | ASPL before | ASPL after | swaps accepted | s |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for layer in rgp_runs[0]["layers"]:
            lines.append(f"| {layer['layer']} | {layer['c_out']} × {layer['c_in']} | {layer['n']} | {layer['k']} | "
                         f"{layer['density']:.4f} | {layer['aspl_before']:.4f} | {layer['aspl_after']:.4f} | "
                         f"{layer['swaps_accepted']} | {layer['seconds']:.3f} |")
    return "\n".join(lines) + "\n"


def comparisons(runs: list[dict]) -> list[str]:
    """RGP minus each other variant, per seed (paired: same seed = same data subset and init seed)."""
    by = {(r["config"]["mask"], r["seed"]): r["test_accuracy"] for r in runs}
    seeds = sorted({seed for mask, seed in by if mask == "rgp"})
    lines = []
    for other in ("random-regular", "random-element", "dense"):
        paired = [(by[("rgp", s)], by[(other, s)]) for s in seeds if (other, s) in by]
        if not paired:
            continue
        diffs = [a - b for a, b in paired]
        wins = sum(d > 0 for d in diffs)
        lines.append(f"- RGP - {other}: mean {statistics.fmean(diffs):+.4f} (per seed "
                     f"{', '.join(f'{d:+.4f}' for d in diffs)}); RGP higher on {wins} of {len(diffs)} seeds")
    return ["", "Paired differences in test accuracy (same seed):", ""] + lines if lines else []


def plot(rows: list[dict], path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    styles = iter([("o", "C0", "C0"), ("s", "C1", "none"), ("D", "C2", "none"), ("^", "C3", "none")])
    for row in rows:
        if row["mean_aspl"] is not None:
            marker, edge, face = next(styles)
            ax.scatter(row["mean_aspl"], row["test_accuracy"], label=row["variant"], marker=marker,
                       edgecolors=edge, facecolors=face, s=60 if marker == "s" else 30)
        else:
            ax.axhspan(row["mean"] - row["std"], row["mean"] + row["std"], alpha=0.2, color="grey")
            ax.axhline(row["mean"], color="grey", linestyle="--", label=f"{row['variant']} (mean ± std, no graph)")
    ax.set_xlabel("mean layer ASPL of the block graph")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def render(out: Path) -> None:
    """Rewrite the markdown and the plot of a finished (or interrupted) benchmark from its JSON."""
    import json

    record = json.loads((out / "rgp.json").read_text())
    args = argparse.Namespace(**{**record["args"], "out": out})
    rows = summarise(record["runs"], args.variants)
    atomic_write_bytes(out / "rgp.md", markdown(record["command"], args, rows, record["runs"],
                                                record["total_time_s"]).encode())
    plot(rows, out / "aspl.png")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        render(args.out)
        print(f"rewrote {args.out}/rgp.md, aspl.png")
        return 0
    args.load_at_start = load_average()
    command = "python benchmarks/rgp.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    torch.set_num_threads(args.threads)
    from cnn_bridge.data import load_cifar10

    data = load_cifar10(args.data_root)
    runs: list[dict] = []
    start = time.perf_counter()
    for seed in args.seeds:
        for variant in args.variants:
            config = RGPRunConfig(model=args.model, mask=variant, dataset="cifar10",
                                  rgp=RGPConfig(groups=args.groups, density=args.density, swaps=args.swaps),
                                  train=CNNTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed),
                                  train_subset=args.train_subset, test_subset=args.test_subset)
            record = run_rgp(config, data, progress=True)
            runs.append(record)
            print(f"seed {seed} {variant:>15}: test {record['test_accuracy']:.4f}  "
                  f"train {record['train_time_s']:.0f} s", flush=True)
            write_results(args, command, runs, time.perf_counter() - start)
    print(f"wrote {args.out}/rgp.json, rgp.md, aspl.png")
    return 0


def write_results(args: argparse.Namespace, command: str, runs: list[dict], total_s: float) -> None:
    """(Re)write all three outputs; called after every run, so an interrupted benchmark keeps its runs."""
    rows = summarise(runs, args.variants)
    arguments = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    atomic_write_json(args.out / "rgp.json", {"command": command, "args": arguments, "summary": rows,
                                              "runs": runs, "total_time_s": total_s,
                                              "complete": len(runs) == len(args.seeds) * len(args.variants)})
    atomic_write_bytes(args.out / "rgp.md", markdown(command, args, rows, runs, total_s).encode())
    plot(rows, args.out / "aspl.png")


if __name__ == "__main__":
    from gnnprune.machine import apply_malloc_mode

    apply_malloc_mode()  # may re-execute this script once with huge pages on ($GNNPRUNE_MALLOC)
    sys.exit(main())
