"""Filter-criteria benchmark: every criterion on one model, one MAC budget, the same dense
weights, the same fine-tuning budget; RGP against a random regular graph and a random mask of
the same density.

The dense model is a trained checkpoint (``--checkpoint``, e.g. the ResNet-20 of
``results/cifar-training/``) or, without one, is trained per seed (saved as OUT/pretrained-seed-K.pt).
Each criterion prunes it to the MAC target, fine-tunes under the channel masks and is compacted
(:func:`cnn_bridge.prune_flow.run_prune`); each mask method (``rgp``, ``random-regular``,
``random-element``) masks the same weights at the density that removes the same MACs and
fine-tunes with the same budget (:func:`cnn_bridge.experiment.run_rgp`). Every run is appended
to OUT/criteria.json as it finishes (``--resume`` skips the runs already there); at the end
OUT/criteria.md (the command and a table) and OUT/criteria.png are written.

``--techniques`` adds rows that are not plain criteria: ``asc`` (the ASCP flow, uniform allocation),
``snf-CRITERION`` (the SNF allocation with that criterion), ``ghost`` and ``g-ghost`` (C-Ghost and
G-Ghost ResNet of the same depth trained from scratch on the same images for the pretraining plus
fine-tuning epochs at the pretraining learning rate, no pruning). With ``--rm`` every criterion also prunes the RMNet plain
network of the same dense ResNet (:func:`cnn_bridge.rmnet.resnet_to_plain`, saved as
OUT/plain-seed-K.pt), where every convolution's output channels are prunable, to the same MAC
target: ``(1 - r)`` times the *ResNet's* dense MACs (rows ``CRITERION (RM)``).

    python benchmarks/criteria.py --model resnet20 --checkpoint results/cifar-training/resnet20-cifar10.pt \
        --mac-reduction 0.5 --finetune-steps 391 --precision bf16 --channels-last --seeds 0,1,2 \
        --threads 1 --out results/criteria/resnet20-trained
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from cnn_bridge.counting import count_model
from cnn_bridge.criteria import CRITERIA
from cnn_bridge.experiment import RGPRunConfig, run_rgp
from cnn_bridge.models import CNN_MODELS, build_cnn_model, cnn_model_spec
from cnn_bridge.prune_flow import Allocation, PruneFlow, PruneRunConfig, run_prune
from cnn_bridge.rgp import RGPConfig, density_for_mac_reduction
from cnn_bridge.train import CNNTrainConfig, Precision, evaluate_cnn, train_cnn
from gnnprune.io import atomic_torch_save, atomic_write_bytes, atomic_write_json, safe_torch_load
from gnnprune.machine import load_average, load_note

#: The read-only data folder beside a checkout of this repository, if there is one.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Mask methods of :data:`cnn_bridge.experiment.MASKS` compared with the criteria (dense is the reference).
MASK_METHODS = ("rgp", "random-regular", "random-element")
#: techniques that train a smaller model from scratch: the registry name of its version of ``--model``
BORN_SMALL = {"ghost": "ghost_{}", "g-ghost": "g_ghost_{}"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--mac-reduction", type=float, default=0.5)
    p.add_argument("--checkpoint", type=Path,
                   help="dense state_dict to start every run from (else one is trained per seed)")
    p.add_argument("--pretrain-epochs", type=int, default=3)
    p.add_argument("--pretrain-lr", type=float, default=0.1)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--finetune-steps", type=int, help="fine-tuning budget in optimizer steps (caps --finetune-epochs)")
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", choices=[m.value for m in Precision], default=Precision.FP32.value,
                   help="fine-tuning (and pretraining) arithmetic; evaluation is fp32")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format for training")
    p.add_argument("--train-subset", type=int, help="class-stratified training subset (default: all 50,000)")
    p.add_argument("--test-subset", type=int, help="class-stratified test subset (default: all 10,000)")
    p.add_argument("--feature-images", type=int, default=128)
    p.add_argument("--sensitivity-images", type=int, default=250)
    p.add_argument("--latency-repeats", type=int, default=3)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--criteria", default=",".join(CRITERIA))
    p.add_argument("--masks", default=",".join(MASK_METHODS),
                   help="mask methods at the same MAC budget (comma-separated; empty for none)")
    p.add_argument("--techniques", default="",
                   help="extra rows: asc, snf-CRITERION, ghost, g-ghost (comma-separated; default none)")
    p.add_argument("--rm", action="store_true",
                   help="also prune the RMNet plain network (all channels) to the same MACs as the ResNet")
    p.add_argument("--calibration-images", type=int, default=512,
                   help="training images whose statistics the plain network's pass-through batch norms get")
    p.add_argument("--rgp-groups", type=int, default=16, help="channel groups per layer of the mask methods")
    p.add_argument("--time-budget", type=float,
                   help="seconds: start no run that would end after it (judged by the longest run so far); "
                        "the table then holds the runs that finished")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", type=Path, default=SHARED_DATA if SHARED_DATA.is_dir() else None,
                   help="folder holding cifar10/cifar10-jpeg.tar.gz (default: ../shared/data when it exists)")
    p.add_argument("--out", type=Path, default=Path("results/criteria"))
    again = p.add_mutually_exclusive_group()
    again.add_argument("--overwrite", action="store_true", help="replace an existing OUT/criteria.json")
    again.add_argument("--resume", action="store_true", help="keep the runs in OUT/criteria.json, run the rest")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.criteria = [c for c in args.criteria.split(",") if c]
    args.masks = [m for m in args.masks.split(",") if m]
    for name in args.criteria:
        if name not in CRITERIA:
            p.error(f"unknown criterion {name!r}; choose from {', '.join(CRITERIA)}")
    for name in args.masks:
        if name not in MASK_METHODS:
            p.error(f"unknown mask method {name!r}; choose from {', '.join(MASK_METHODS)}")
    args.techniques = [name for name in args.techniques.split(",") if name]
    for name in args.techniques:
        inner = name.removeprefix("snf-")
        if name not in ("asc", *BORN_SMALL) and not (name.startswith("snf-") and inner in CRITERIA
                                                      and inner != "sensitivity"):
            p.error(f"unknown technique {name!r}; choose from asc, ghost, g-ghost, snf-CRITERION (a criterion but "
                    "sensitivity)")
        if name in BORN_SMALL and BORN_SMALL[name].format(args.model) not in CNN_MODELS:
            p.error(f"no {name} version of {args.model!r}; {name} needs resnet20 or resnet56")
    if args.finetune_steps is not None and args.finetune_steps < 1:
        p.error("--finetune-steps must be >= 1")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        p.error(f"--checkpoint {args.checkpoint}: no such file")
    if (args.out / "criteria.json").exists() and not (args.overwrite or args.resume):
        p.error(f"{args.out / 'criteria.json'} exists; pass --resume, --overwrite or another --out")
    return args


def plain_args(args: argparse.Namespace) -> dict:
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
            if key != "load_at_start"}


def method_of(run: dict) -> str:
    """The criterion or mask method a run record belongs to."""
    return run["method"]


def summarise(runs: list[dict], methods: list[str]) -> list[dict]:
    """One row per method: accuracy after fine-tuning (mean ± sample std over seeds), before, dense, counts."""
    rows = []
    for name in methods:
        mine = [r for r in runs if method_of(r) == name]
        if not mine:
            continue
        after = [r["accuracy"]["masked_after_finetune"] for r in mine]
        before = [r["accuracy"]["masked_before_finetune"] for r in mine]
        compact = [r for r in mine if "latency_s" in r]
        rows.append({
            "method": name, "kind": mine[0]["kind"], "seeds": [r["seed"] for r in mine],
            "after": after, "before": before,
            "after_mean": statistics.fmean(after), "after_std": statistics.stdev(after) if len(after) > 1 else 0.0,
            "before_mean": None if None in before else statistics.fmean(before),
            "dense_mean": statistics.fmean(r["accuracy"]["dense"] for r in mine),
            "macs_ratio": [r.get("macs_kept_of_resnet", r["counts"]["macs"]["ratio"]) for r in mine],
            "params_ratio": [r["counts"]["params"]["ratio"] for r in mine],
            "finetune_steps": [r["finetune"]["steps"] for r in mine],
            "speedup_64": [r["latency_s"]["batch_64"]["speedup"] for r in compact],
            "max_abs_diff": max((r["compact_max_abs_diff"] for r in compact), default=None),
        })
    return rows


def _budget(args: argparse.Namespace) -> str:
    steps = f"{args.finetune_steps} steps (at most {args.finetune_epochs} epoch(s))" if args.finetune_steps \
        else f"{args.finetune_epochs} epoch(s)"
    return f"fine-tuning {steps} of batch {args.batch_size} at lr {args.finetune_lr} (cosine), {args.precision}"


def markdown(command: str, args: argparse.Namespace, rows: list[dict], total_s: float,
             skipped: list[tuple[str, int]] = ()) -> str:
    train = "all 50,000" if args.train_subset is None else f"{args.train_subset}"
    test = "all 10,000" if args.test_subset is None else f"{args.test_subset}"
    start = (f"dense checkpoint {args.checkpoint}" if args.checkpoint is not None
             else f"dense pretraining {args.pretrain_epochs} epochs (lr {args.pretrain_lr}) per seed")
    lines = [f"# Filter criteria benchmark ({args.model}, {args.mac_reduction:.0%} MAC reduction)", "", "Command:", "",
             "```", command, "```", "",
             f"CIFAR-10: {train} training / {test} test images; {start}; {_budget(args)}, the same for every "
             f"method; data-driven criteria see {args.feature_images} training images; mask methods use "
             f"{args.rgp_groups} channel groups per layer at the density that removes the same MACs; "
             f"{args.threads} thread(s); "
             f"{load_note(getattr(args, 'load_at_start', None)) or 'machine load not recorded'}; the batch-64 speedup "
             f"is masked vs compact latency, measured alternately in the same run. Total {total_s:.0f} s.", "",
             "| method | accuracy after fine-tune mean ± std | per seed | before fine-tune (mean) | dense (mean) | "
             "MACs kept | params kept | batch-64 speedup | max abs diff compact vs masked |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        speedup = ", ".join(f"{s:.2f}" for s in row["speedup_64"]) or "not compacted (sparse mask)"
        diff = "—" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.2e}"
        lines.append(
            f"| {row['method']} | {row['after_mean']:.4f} ± {row['after_std']:.4f} | "
            f"{', '.join(f'{a:.4f}' for a in row['after'])} | {'n/a' if row['before_mean'] is None else format(row['before_mean'], '.4f')} | "
            f"{row['dense_mean']:.4f} | "
            f"{', '.join(f'{m:.4f}' for m in sorted(set(row['macs_ratio'])))} | "
            f"{', '.join(f'{m:.4f}' for m in sorted(set(row['params_ratio'])))} | {speedup} | {diff} |")
    if skipped:
        lines += ["", f"Not run (time budget of {args.time_budget:.0f} s reached): "
                  + ", ".join(f"{name} seed {seed}" for name, seed in skipped) + "."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["before_mean"] or 0.0 for r in rows], width=0.4, label="masked, before fine-tune")
    ax.bar([x + 0.2 for x in xs], [r["after_mean"] for r in rows], width=0.4, yerr=[r["after_std"] for r in rows],
           label="after fine-tune (mean ± std)")
    if rows:
        ax.axhline(statistics.fmean(r["dense_mean"] for r in rows), color="grey", linestyle="--", label="dense")
    ax.set_xticks(list(xs), [r["method"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def finetune_config(args: argparse.Namespace, seed: int, epochs: int | None = None,
                    lr: float | None = None) -> CNNTrainConfig:
    """The fine-tuning recipe of every run (``epochs``/``lr`` given: the per-seed pretraining)."""
    pretraining = epochs is not None
    return CNNTrainConfig(epochs=epochs if pretraining else args.finetune_epochs, batch_size=args.batch_size,
                          lr=lr if pretraining else args.finetune_lr, seed=seed, precision=args.precision,
                          channels_last=args.channels_last, max_steps=None if pretraining else args.finetune_steps)


def mask_run(args: argparse.Namespace, name: str, seed: int, checkpoint: Path, data, dense_accuracy: float) -> dict:
    """``name`` masks on the checkpoint's weights at the criteria's MAC budget, fine-tuned alike."""
    spec = cnn_model_spec(args.model)
    density = density_for_mac_reduction(build_cnn_model(args.model), spec.input_shape, args.mac_reduction)
    config = RGPRunConfig(model=args.model, mask=name,
                          rgp=RGPConfig(groups=args.rgp_groups, density=density, seed=seed),
                          train=finetune_config(args, seed), train_subset=args.train_subset,
                          test_subset=args.test_subset, checkpoint=str(checkpoint))
    record = run_rgp(config, data, None, progress=True, dense_accuracy=dense_accuracy)
    record["accuracy"]["masked_after_finetune"] = record["test_accuracy"]
    record["finetune"] = {"steps": record["steps"], "train_time_s": record["train_time_s"]}
    record["target_density"] = density
    return record


def born_small_run(technique: str, args: argparse.Namespace, subset, seed: int, config: CNNTrainConfig) -> dict:
    """The technique's model (Ghost / G-Ghost ResNet) trained from scratch on the seed's subset; a
    record shaped like :func:`run_prune`'s."""
    name = BORN_SMALL[technique].format(args.model)
    torch.manual_seed(seed)
    model = build_cnn_model(name, num_classes=subset.num_classes, in_channels=subset.train_x.shape[1])
    dense = count_model(build_cnn_model(args.model, num_classes=subset.num_classes), tuple(subset.train_x.shape[1:]))
    counts = count_model(model, tuple(subset.train_x.shape[1:]))
    train = train_cnn(model, subset, config, description=f"train {name} s{seed}")
    ratio = {key: {"dense": dense[key]["dense"], "pruned": counts[key]["dense"],
                   "ratio": counts[key]["dense"] / dense[key]["dense"]} for key in ("params", "macs")}
    return {"config": {"model": name, "train": vars(config)}, "seed": seed, "counts": ratio,
            "accuracy": {"masked_before_finetune": None, "masked_after_finetune": train["test_accuracy"]},
            "finetune": train, "times_s": {}}


def rm_variant(resnet: torch.nn.Module, data, args: argparse.Namespace, seed: int) -> tuple[str, Path, float]:
    """Convert ``resnet`` to its plain network (saved as OUT/plain-seed-K.pt) and the MAC reduction of
    the plain network that leaves ``(1 - r)`` times the ResNet's dense MACs."""
    from cnn_bridge.data import normalise
    from cnn_bridge.rmnet import PLAIN_MODELS, resnet_to_plain

    shape = tuple(data.train_x.shape[1:])
    calibration = normalise(data.train_x[:args.calibration_images], data.mean, data.std)
    plain = resnet_to_plain(resnet.eval(), calibration.split(128))
    path = args.out / f"plain-seed-{seed}.pt"
    atomic_torch_save(plain.state_dict(), path)
    resnet_macs, plain_macs = (count_model(m, shape)["macs"]["dense"] for m in (resnet, plain))
    return PLAIN_MODELS[args.model], path, 1.0 - (1.0 - args.mac_reduction) * resnet_macs / plain_macs


RM_SUFFIX = " (RM)"


def prune_settings(name: str) -> dict:
    """The :class:`PruneRunConfig` fields that make row ``name``: a criterion, ``asc`` or ``snf-CRITERION``."""
    name = name.removesuffix(RM_SUFFIX)
    if name == "asc":
        return {"flow": PruneFlow.ASC}
    if name.startswith("snf-"):
        return {"criterion": name.removeprefix("snf-"), "allocation": Allocation.SNF}
    return {"criterion": name}


def main(argv=None) -> int:
    args = parse_args(argv)
    args.load_at_start = load_average()
    command = "python benchmarks/criteria.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    torch.set_num_threads(args.threads)
    from cnn_bridge.data import load_cifar10

    data = load_cifar10(args.data_root)
    saved = args.out / "criteria.json"
    previous = json.loads(saved.read_text()) if args.resume and saved.exists() else {}
    runs: list[dict] = previous.get("runs", [])
    done = {(method_of(r), r["seed"]) for r in runs}
    methods = (args.criteria + [name + RM_SUFFIX for name in args.criteria if args.rm] + args.techniques
               + args.masks)
    start = time.perf_counter() - previous.get("total_time_s", 0.0)
    save = lambda extra=None: atomic_write_json(args.out / "criteria.json", {  # noqa: E731
        "command": command, "args": plain_args(args), "runs": runs, "total_time_s": time.perf_counter() - start,
        **(extra or {})})
    bar = tqdm(total=len(args.seeds) * len(methods), initial=len(done), desc="criteria runs")
    clock, longest, skipped, dense_accuracies = time.perf_counter(), 0.0, [], {}
    out_of_time = lambda: (args.time_budget is not None and longest > 0  # noqa: E731  (the first run always starts)
                           and time.perf_counter() - clock + longest > args.time_budget)
    for seed in args.seeds:
        todo = [name for name in methods if (name, seed) not in done]
        if not todo:
            continue
        if out_of_time():
            skipped += [(name, seed) for name in todo]
            continue
        subset = data.subset(args.train_subset, args.test_subset, seed=seed)
        if args.checkpoint is not None:
            checkpoint, pretrain = args.checkpoint, {"checkpoint": str(args.checkpoint)}
            model = build_cnn_model(args.model, num_classes=subset.num_classes, in_channels=subset.train_x.shape[1])
            model.load_state_dict(safe_torch_load(checkpoint))
        else:
            torch.manual_seed(seed)
            model = build_cnn_model(args.model, num_classes=subset.num_classes, in_channels=subset.train_x.shape[1])
            pretrain = train_cnn(model, subset, finetune_config(args, seed, args.pretrain_epochs, args.pretrain_lr),
                                 description=f"pretrain s{seed}")
            checkpoint = args.out / f"pretrained-seed-{seed}.pt"
            atomic_torch_save(model.state_dict(), checkpoint)
        key = (str(checkpoint), args.test_subset is None or seed)  # the whole test split is the same for every seed
        if key not in dense_accuracies:
            dense_accuracies[key] = evaluate_cnn(model, subset.test_x, subset.test_y, subset.mean, subset.std)
        dense_accuracy = dense_accuracies[key]
        shape = tuple(subset.train_x.shape[1:])
        dense_macs = count_model(model, shape)["macs"]["dense"]
        plain = rm_variant(model, subset, args, seed) if any(n.endswith(RM_SUFFIX) for n in todo) else None
        for name in todo:
            if out_of_time():
                skipped.append((name, seed))
                continue
            run_start = time.perf_counter()
            if name in BORN_SMALL:
                epochs = args.pretrain_epochs + args.finetune_epochs
                record = born_small_run(name, args, subset, seed, finetune_config(args, seed, epochs, args.pretrain_lr))
                record["accuracy"]["dense"] = dense_accuracy
                record["kind"] = "born small"
            elif name not in args.masks:
                model_name, source, reduction = (plain if name.endswith(RM_SUFFIX)
                                                 else (args.model, checkpoint, args.mac_reduction))
                config = PruneRunConfig(model=model_name, mac_reduction=reduction,
                                        checkpoint=str(source), finetune=finetune_config(args, seed),
                                        feature_images=args.feature_images, sensitivity_images=args.sensitivity_images,
                                        latency_repeats=args.latency_repeats, train_subset=args.train_subset,
                                        test_subset=args.test_subset, **prune_settings(name))
                record = run_prune(config, data, None, progress=True,
                                   dense_accuracy=None if name.endswith(RM_SUFFIX) else dense_accuracy)
                record["macs_kept_of_resnet"] = record["counts"]["macs"]["pruned"] / dense_macs
                record["kind"] = "criterion"
            else:
                record = mask_run(args, name, seed, checkpoint, data, dense_accuracy)
                record["kind"] = "mask"
            record["method"], record["pretrain"] = name, pretrain
            runs.append(record)
            longest = max(longest, time.perf_counter() - run_start)
            bar.update(1)
            save()
    bar.close()
    rows = summarise(runs, methods)
    total = time.perf_counter() - start
    save({"rows": rows, "not_run": [list(pair) for pair in skipped]})
    report = markdown(command, args, rows, total, skipped)
    atomic_write_bytes(args.out / "criteria.md", report.encode())
    plot(rows, args.out / "criteria.png")
    print(report)
    return 0


if __name__ == "__main__":
    from gnnprune.machine import apply_malloc_mode

    apply_malloc_mode()  # may re-execute this script once with huge pages on ($GNNPRUNE_MALLOC)
    sys.exit(main())
