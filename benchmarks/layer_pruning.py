"""Block removal guided by class modularity vs the same number of random blocks, after the same
fine-tuning (:mod:`cnn_bridge.layer_pruning`).

Per seed a CIFAR ResNet is loaded (``--checkpoints``, e.g. the pretrained models benchmarks/criteria.py
saves) or trained on a class-stratified CIFAR-10 subset; the modularity curve of its stem and block
outputs is measured on ``--analysis-images`` training images (cosine k-NN graph, k = 3); the
``--remove`` removable blocks of smallest modularity gain and as many random removable blocks are
removed from two copies, each copy is fine-tuned with the same budget, and accuracy, depth, MACs,
params and batch-64 CPU latency (alternated with the dense model) are recorded. Writes
OUT/layer-pruning.json and OUT/layer-pruning.md.

    python benchmarks/layer_pruning.py --model resnet20 --remove 3 \\
        --checkpoints results/rmnet/criteria/pretrained-seed-{seed}.pt --train-subset 2000 --test-subset 1000 \\
        --seeds 0,1,2 --threads 1 --out results/rmnet/layer-pruning
"""
from __future__ import annotations

import argparse
import copy
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from cnn_bridge.counting import count_model
from cnn_bridge.data import normalise
from cnn_bridge.latency import paired_latency
from cnn_bridge.layer_analysis import block_outputs, knn_graph, modularity
from cnn_bridge.layer_pruning import (modularity_guided_blocks, random_blocks, remove_blocks, removable_blocks,
                                      weight_depth)
from cnn_bridge.models import build_cnn_model
from cnn_bridge.train import CNNTrainConfig, evaluate_cnn, train_cnn
from gnnprune.io import atomic_write_bytes, atomic_write_json, safe_torch_load
from gnnprune.machine import load_average, load_note

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RULES = ("modularity", "random")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--remove", type=int, default=3, help="blocks removed by each rule")
    p.add_argument("--checkpoints", help="dense state_dict per seed, '{seed}' in the path (else trained here)")
    p.add_argument("--pretrain-epochs", type=int, default=5)
    p.add_argument("--pretrain-lr", type=float, default=0.05)
    p.add_argument("--finetune-epochs", type=int, default=1, help="0: no fine-tuning (accuracy right after removal)")
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-subset", type=int, default=2000)
    p.add_argument("--test-subset", type=int, default=1000)
    p.add_argument("--analysis-images", type=int, default=500)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--latency-repeats", type=int, default=5)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", type=Path, default=SHARED_DATA if SHARED_DATA.is_dir() else None)
    p.add_argument("--out", type=Path, default=Path("results/rmnet/layer-pruning"))
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/layer-pruning.json")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if (args.out / "layer-pruning.json").exists() and not args.overwrite:
        p.error(f"{args.out / 'layer-pruning.json'} exists; pass --overwrite or choose another --out")
    return args


def run_seed(args: argparse.Namespace, data, seed: int) -> dict:
    subset = data.subset(args.train_subset, args.test_subset, seed=seed)
    training = lambda epochs, lr: CNNTrainConfig(epochs=epochs, batch_size=args.batch_size, lr=lr, seed=seed)  # noqa: E731
    torch.manual_seed(seed)
    model = build_cnn_model(args.model, num_classes=subset.num_classes, in_channels=subset.train_x.shape[1])
    if args.checkpoints:
        model.load_state_dict(safe_torch_load(args.checkpoints.format(seed=seed)))
        source = args.checkpoints.format(seed=seed)
    else:
        train_cnn(model, subset, training(args.pretrain_epochs, args.pretrain_lr), description=f"pretrain s{seed}")
        source = "trained here"
    model.eval()
    shape = tuple(subset.train_x.shape[1:])
    evaluate = lambda m: evaluate_cnn(m, subset.test_x, subset.test_y, subset.mean, subset.std)  # noqa: E731
    probe = subset.subset(args.analysis_images, None, seed=seed)
    _, features, _, _ = block_outputs(model, normalise(probe.train_x, subset.mean, subset.std))
    curve = [modularity(knn_graph(f, args.k), probe.train_y) for f in features]
    removable = removable_blocks(model)
    choices = {"modularity": modularity_guided_blocks(curve, removable, args.remove),
               "random": random_blocks(removable, args.remove, seed)}
    dense_counts = count_model(model, shape)
    record = {"seed": seed, "checkpoint": source, "dense_accuracy": evaluate(model), "modularity": curve,
              "removable": removable, "dense": {"depth": weight_depth(model), "macs": dense_counts["macs"]["dense"],
                                                "params": dense_counts["params"]["dense"]}, "rules": {}}
    for rule, blocks in choices.items():
        small = remove_blocks(copy.deepcopy(model), blocks)
        before = evaluate(small)
        after = before
        if args.finetune_epochs:
            config = training(args.finetune_epochs, args.finetune_lr)
            after = train_cnn(small, subset, config, description=f"{rule} s{seed}")["test_accuracy"]
        counts = count_model(small, shape)
        dense_s, small_s = paired_latency(model, small, shape, 64, args.latency_repeats)
        record["rules"][rule] = {"blocks": blocks, "accuracy_before_finetune": before,
                                 "accuracy_after_finetune": after, "depth": weight_depth(small),
                                 "macs": counts["macs"]["dense"], "params": counts["params"]["dense"],
                                 "latency_64_s": {"dense": dense_s, "pruned": small_s, "speedup": dense_s / small_s}}
    return record


def markdown(command: str, args: argparse.Namespace, records: list[dict], total_s: float) -> str:
    lines = [f"# Block removal: modularity-guided vs random ({args.model}, {args.remove} blocks)", "", "Command:", "",
             "```", command, "```", "",
             f"CIFAR-10 subset {args.train_subset} train / {args.test_subset} test (class-stratified per seed); "
             f"modularity on {args.analysis_images} training images (k = {args.k}); fine-tuning {args.finetune_epochs} "
             f"epoch(s) at lr {args.finetune_lr} for both rules; {args.threads} thread(s); "
             f"{load_note(getattr(args, 'load_at_start', None)) or 'machine load not recorded'}. Total {total_s:.0f} s.",
             "", "| rule | accuracy after fine-tune mean ± std | per seed | before fine-tune (per seed) | dense (per seed) | "
             "blocks removed (per seed) | depth | MACs kept | batch-64 speedup vs dense (per seed) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    join = lambda values, spec: ", ".join(format(v, spec) for v in values)  # noqa: E731
    for rule in RULES:
        rows = [r["rules"][rule] for r in records]
        after = [r["accuracy_after_finetune"] for r in rows]
        std = statistics.stdev(after) if len(after) > 1 else 0.0
        blocks = "; ".join(",".join(str(b + 1) for b in r["blocks"]) for r in rows)
        macs = [r["macs"] / rec["dense"]["macs"] for r, rec in zip(rows, records)]
        lines.append(
            f"| {rule} | {statistics.fmean(after):.4f} ± {std:.4f} | {join(after, '.4f')} | "
            f"{join([r['accuracy_before_finetune'] for r in rows], '.4f')} | "
            f"{join([r['dense_accuracy'] for r in records], '.4f')} | {blocks} | "
            f"{rows[0]['depth']} of {records[0]['dense']['depth']} | {join(macs, '.4f')} | "
            f"{join([r['latency_64_s']['speedup'] for r in rows], '.2f')} |")
    lines += ["", "Modularity curve (stem, block 1, ...) per seed:", ""]
    lines += [f"- seed {r['seed']}: " + ", ".join(f"{q:.4f}" for q in r["modularity"]) for r in records]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    args.load_at_start = load_average()
    command = "python benchmarks/layer_pruning.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    torch.set_num_threads(args.threads)
    from cnn_bridge.data import load_cifar10

    data = load_cifar10(args.data_root)
    start = time.perf_counter()
    records = []
    for seed in tqdm(args.seeds, desc="seeds"):
        records.append(run_seed(args, data, seed))
        atomic_write_json(args.out / "layer-pruning.json", {"command": command, "records": records})
    total = time.perf_counter() - start
    plain = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    atomic_write_json(args.out / "layer-pruning.json", {"command": command, "args": plain, "records": records,
                                                        "total_time_s": total})
    text = markdown(command, args, records, total)
    atomic_write_bytes(args.out / "layer-pruning.md", text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
