"""Inference of exported pruned models against the dense model, at ogbn-arxiv size.

On a synthetic graph of ogbn-arxiv's size (169,343 nodes, 1,166,243 undirected edges, 128
features, 40 classes; the ``synthetic:arxiv`` sizes, cached as in :mod:`benchmarks.speed`)
with a fixed number of CPU threads, for each model and pruning setting:

* the dense model (every edge, feature and weight; the library's own forward) and the
  exported model (:func:`gnnprune.export.compact`: kept features selected from the full input,
  dead units removed, operator cached for the graph tensors) are timed in turn in one process
  (``--rounds`` rounds after a warm-up); the time ratio is the median of the per-round ratios;
* the MAC ratio of the exported model: the MACs it executes (every entry of its narrow dense
  weights, its operator entries times the propagated widths) over the dense model's;
* the largest difference between the exported and the masked model's logits;
* peak resident memory of one forward pass, dense and exported, each in a fresh process;
* Cora test accuracy (``--cora-seeds`` seeds) of ``gnnprune prune`` at the same setting, trained with
  the command's defaults (the run folders are kept under ``OUT/cora-runs`` and reused).

Settings (``--settings``): ``unstructured:W/E/F`` prunes a fraction ``W`` of every weight
tensor's entries, ``E`` of the edges and ``F`` of the feature columns; ``structured:U/E/F``
removes a fraction ``U`` of the hidden units of every unit group
(:meth:`gnnprune.nn.GraphModel.hidden_units`: every parameter slice of a unit is zeroed, its
producing columns, bias entry, norm entries and consuming rows; GCNII's and ResGCN's units span
all their layers; SGC has none). The timed
models are not trained: masks are set at the targets by a seeded random choice (time does
not depend on weight values; which units die does, and a random choice is what a trained
run's magnitudes look like to the export only approximately). Biases start at 0, as after
initialisation. The Cora runs of the structured setting use ``--weight-structure unit``, which
this build may lack (then the column says so).

    python -m benchmarks.inference --out results/inference              # full run
    python -m benchmarks.inference --out /tmp/inference --quick --rounds 3 --cora-seeds 0   # smoke test
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.speed import ARXIV, QUICK, _graph, _interleaved, run_in_subprocesses
from gnnprune.machine import load_average, load_note, malloc_note

MODELS = ("gcn", "appnp", "sgc", "gat", "gcn2")
SETTINGS = "unstructured:0.9/0.5/0.5,structured:0.9/0.5/0.5"
STRUCTURES = ("unstructured", "structured")


def parse_settings(text: str) -> dict[str, tuple[str, float, float, float]]:
    """``"unstructured:0.9/0.5/0.5,structured:0.9/0.5/0.5"`` -> ``{name: (structure, weights/units, edges, features)}``."""
    settings = {}
    for item in filter(None, text.split(",")):
        structure, _, fractions = item.partition(":")
        values = fractions.split("/")
        if structure not in STRUCTURES or len(values) != 3:
            raise ValueError(f"bad setting {item!r}; use STRUCTURE:W/E/F with STRUCTURE in {', '.join(STRUCTURES)}")
        numbers = tuple(float(v) for v in values)
        if not all(0.0 <= v < 1.0 for v in numbers):
            raise ValueError(f"bad setting {item!r}: fractions must be in [0, 1)")
        settings[item] = (structure, *numbers)
    return settings


def prune_at(model_name: str, data, setting: tuple[str, float, float, float], seed: int = 0):
    """A fresh model (eval mode) and its pruner with masks at ``setting`` (seeded random choice).

    Returns ``(model, pruner)``; for a structured setting the model's units are separated
    (:meth:`~gnnprune.nn.GraphModel.separate_units`, same outputs) and the removed units' slices are zeroed.
    """
    from gnnprune.copruning import EDGES, FEATURES, WEIGHT_PREFIX, CoPruner
    from gnnprune.nn import build_model

    structure, weights, edges, features = setting
    torch.manual_seed(seed)
    model = build_model(model_name, data.num_features, data.num_classes).eval()
    pruner = CoPruner(model, data)
    g = torch.Generator().manual_seed(seed + 1)
    fractions = {EDGES: edges, FEATURES: features}
    for site in list(pruner.engine):
        fraction = fractions.get(site.name, weights if structure == "unstructured" else 0.0)
        if site.name.startswith(WEIGHT_PREFIX) or site.name in fractions:
            pruner.engine.prune(site.name, round(fraction * site.numel), torch.rand(site.mask.shape, generator=g))
    pruner.refresh()
    if structure == "structured":
        model.separate_units()
        state = model.state_dict()  # shares storage with the model
        for group in model.hidden_units().values():
            removed = torch.randperm(group.size, generator=g)[:round(weights * group.size)]
            for piece in group.slices:  # one axis each once separated
                state[piece.param].index_fill_(piece.dims[0], removed, 0.0)
    return model, pruner


def task_pair(data, model_name: str, setting_text: str, rounds: int) -> dict:
    """Dense and exported inference interleaved in one process, plus MACs and the output check."""
    from gnnprune.copruning import CoPruner
    from gnnprune.export import compact, dense_macs, kept_graph, max_abs_difference
    from gnnprune.nn import build_model

    setting = parse_settings(setting_text)[setting_text]
    model, pruner = prune_at(model_name, data, setting)
    exported = compact(model, pruner)
    graph = kept_graph(pruner)
    difference = max_abs_difference(exported, model, pruner, data, graph)
    torch.manual_seed(0)
    dense = build_model(model_name, data.num_features, data.num_classes).eval()
    full = CoPruner(dense, data)
    x, edge_index, edge_weight = data.x, graph["edge_index"], graph["edge_weight"]
    times = _interleaved({"dense": torch.no_grad()(lambda: dense(full.inputs(), full.graph())),
                          "exported": torch.no_grad()(lambda: exported(x, edge_index, edge_weight))}, rounds)
    columns = int(edge_index.size(1))
    executed = sum(layer["transform"] + layer["aggregation"] for layer in exported.macs(data.num_nodes, columns))
    reference = dense_macs(dense, data.num_nodes, data.edges.num_edges)
    return {"times_s": times, "macs": {"exported": executed, "dense": reference, "ratio": executed / reference},
            "units": exported.units, "kept_edges": columns // 2, "max_abs_diff": difference}


def task_memory(data, model_name: str, variant: str) -> dict:
    """Peak RSS of one forward pass of the dense model (``variant == "dense"``) or an exported one."""
    from gnnprune.copruning import CoPruner
    from gnnprune.export import compact, kept_graph
    from gnnprune.nn import build_model

    if variant == "dense":
        model = build_model(model_name, data.num_features, data.num_classes).eval()
        full = CoPruner(model, data)
        forward = torch.no_grad()(lambda: model(full.inputs(), full.graph()))
    else:
        model, pruner = prune_at(model_name, data, parse_settings(variant)[variant])
        exported, graph = compact(model, pruner), kept_graph(pruner)
        del model, pruner
        forward = torch.no_grad()(lambda: exported(data.x, graph["edge_index"], graph["edge_weight"]))
    before = _peak_mb()
    forward()
    forward()
    return {"peak_rss_mb": _peak_mb(), "before_forward_mb": before}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cora_accuracy(model_name: str, setting: tuple[str, float, float, float], seeds: int, folder: Path,
                  data_root: Path | None) -> dict:
    """Mean and std of the Cora test accuracy of ``gnnprune prune`` at ``setting`` (run folder reused if done)."""
    from gnnprune.cli import main as gnnprune
    from gnnprune.copruning import WeightGranularity

    structure, weights, edges, features = setting
    if structure == "structured" and "unit" not in {g.value for g in WeightGranularity}:
        return {"unavailable": "--weight-structure unit is not in this build"}
    args = ["prune", "--dataset", "cora", "--model", model_name, "--weight-sparsity", str(weights),
            "--edge-sparsity", str(edges), "--feature-sparsity", str(features),
            "--seeds", ",".join(map(str, range(seeds))), "--threads", "2", "--no-progress", "--out", str(folder)]
    if structure == "structured":
        args += ["--weight-structure", "unit"]
    if data_root is not None:
        args += ["--data-root", str(data_root)]
    record_path = folder / "metrics.json"
    status = json.loads(record_path.read_text()).get("status") if record_path.exists() else None
    if status != "done":
        import io
        from contextlib import redirect_stderr, redirect_stdout

        errors = io.StringIO()
        with redirect_stdout(io.StringIO()), redirect_stderr(errors):  # an unfinished earlier run continues
            code = gnnprune(args + (["--resume"] if status is not None else []))
        if code != 0:
            reason = errors.getvalue().strip().splitlines()[-1:] or [f"exited {code}"]
            return {"unavailable": f"gnnprune prune: {reason[0].split('error: ', 1)[-1]}", "command": " ".join(args)}
    summary = json.loads(record_path.read_text())["summary"]["test"]
    return {"mean": summary["mean"], "std": summary["std"], "n": summary["n"], "command": "python -m gnnprune " + " ".join(args)}


def _run_task(args) -> dict:
    torch.set_num_threads(args.threads)
    data = _graph(Path(args.cache), args.quick)
    kind, model_name, rest = args.task.split(":", 2)
    result = task_pair(data, model_name, rest, args.rounds) if kind == "pair" else task_memory(data, model_name, rest)
    result["allocator"] = malloc_note()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/inference"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (>= 7 for reported figures)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated models")
    parser.add_argument("--settings", default=SETTINGS, help="comma-separated STRUCTURE:W/E/F settings")
    parser.add_argument("--cora-seeds", type=int, default=5, help="seeds of the Cora accuracy runs (0: skip them)")
    parser.add_argument("--data-root", type=Path, help="where Cora lives (default: the usual data roots)")
    parser.add_argument("--quick", action="store_true", help="small graph (smoke test)")
    parser.add_argument("--cache", type=Path, help="graph cache file (default: data/cache/bench/<size>.pt)")
    parser.add_argument("--task", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        settings = parse_settings(args.settings)
    except ValueError as exc:
        parser.error(str(exc))
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    args.cache = args.cache or Path("data/cache/bench") / ("quick.pt" if args.quick else "arxiv.pt")
    if args.task:
        print(json.dumps(_run_task(args)))
        return 0

    from tqdm.auto import tqdm

    from gnnprune.io import atomic_write_bytes, atomic_write_json

    load = load_average()
    _graph(args.cache, args.quick)  # generate once, outside the timed subprocesses
    tasks = [f"pair:{m}:{s}" for m in models for s in settings]
    tasks += [f"memory:{m}:{v}" for m in models for v in ("dense", *settings)]
    results = run_in_subprocesses("benchmarks.inference", tasks, [
        "--threads", str(args.threads), "--rounds", str(args.rounds), "--cache", str(args.cache),
        "--settings", args.settings, "--models", args.models] + (["--quick"] if args.quick else []), desc="inference")
    accuracy = {}
    if args.cora_seeds > 0:
        for m in tqdm(models, desc="cora", file=sys.stderr):
            for name, setting in settings.items():
                folder = args.out / "cora-runs" / f"{m}-{name.replace(':', '-').replace('/', '_')}"
                accuracy[f"{m}:{name}"] = cora_accuracy(m, setting, args.cora_seeds, folder, args.data_root)
    report = summarize(results, accuracy, models, settings, args)
    report["load_average_at_start"] = load
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "inference.json", report)
    atomic_write_bytes(args.out / "inference.md", markdown(report).encode())
    plot(report, args.out / "time_vs_macs.png")
    print(markdown(report))
    return 0


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "unknown")


def summarize(results: dict, accuracy: dict, models: list[str], settings: dict, args) -> dict:
    """One row per model and setting: MAC ratio, time ratio (median of per-round ratios), memory, accuracy, checks."""
    rows = []
    for m in models:
        for name in settings:
            pair = results.get(f"pair:{m}:{name}", {})
            if "times_s" not in pair:
                rows.append({"model": m, "setting": name, "error": pair.get("error", "missing")})
                continue
            dense_t, exported_t = pair["times_s"]["dense"], pair["times_s"]["exported"]
            time_ratio = statistics.median(e / d for e, d in zip(exported_t, dense_t))
            mac_ratio = pair["macs"]["ratio"]
            memory = {v: results.get(f"memory:{m}:{v}", {}) for v in ("dense", name)}
            row = {"model": m, "setting": name, "mac_ratio": mac_ratio, "time_ratio": time_ratio,
                   "dense_s": statistics.median(dense_t), "exported_s": statistics.median(exported_t),
                   "units": pair["units"], "kept_edges": pair["kept_edges"], "max_abs_diff": pair["max_abs_diff"],
                   "peak_rss_mb": {"dense": memory["dense"].get("peak_rss_mb"), "exported": memory[name].get("peak_rss_mb")},
                   "inference_rss_increase_mb": {key: entry["peak_rss_mb"] - entry["before_forward_mb"]
                                                 if "peak_rss_mb" in entry else None
                                                 for key, entry in (("dense", memory["dense"]), ("exported", memory[name]))},
                   "cora_test": accuracy.get(f"{m}:{name}"),
                   "within_1.5x_macs_plus_0.05": time_ratio <= 1.5 * mac_ratio + 0.05}
            if m == "gcn" and settings[name][0] == "structured":
                row["gcn_structured_at_most_0.30"] = time_ratio <= 0.30
            rows.append(row)
    return {
        "command": "python -m benchmarks.inference " + " ".join(sys.argv[1:]),
        "graph": QUICK if args.quick else ARXIV, "size": "quick (smoke test)" if args.quick else "ogbn-arxiv",
        "threads": args.threads, "rounds": args.rounds, "cpu": _cpu_model(), "torch": torch.__version__,
        "allocator": sorted({r["allocator"] for r in results.values() if "allocator" in r}),
        "masks": "not trained: seeded random choice at the targets; biases 0 (initialisation)",
        "rows": rows, "errors": {task: r["error"] for task, r in results.items() if "error" in r}, "raw": results,
    }


def markdown(report: dict) -> str:
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"  # noqa: E731
    lines = [f"# Exported models vs dense at {report['size']} size", "",
             f"`{report['command']}` — {report['graph']}, {report['threads']} threads, {report['rounds']} interleaved "
             f"rounds, CPU {report['cpu']}, torch {report['torch']}; "
             f"{load_note(report.get('load_average_at_start')) or 'machine load not recorded'}; allocator: "
             f"{', '.join(report.get('allocator', [])) or 'not recorded'}. Masks: {report['masks']}.", "",
             "Time ratio: median over rounds of (exported / dense) for one forward pass, timed in turn in one process. "
             "MAC ratio: MACs the exported model executes (all entries of its narrow dense weights) over the dense "
             "model's. Peak RSS: one process per variant, two forward passes; in brackets its growth during them "
             "(over the process with data and model loaded).", "",
             "| model | setting | hidden units kept | MAC ratio | time ratio | dense s | exported s | peak RSS dense / exported (MB) "
             "| max abs diff | Cora test | time <= 1.5 MAC + 0.05 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['setting']} | failed: {row['error']} |||||||||")
            continue
        units = ", ".join(f"{k} {v['kept']}/{v['total']}" for k, v in row["units"].items() if k != "features") or "none"
        cora = row["cora_test"]
        cora_text = ("not run" if cora is None else cora["unavailable"] if "unavailable" in cora
                     else f"{cora['mean']:.4f} ± {cora['std']:.4f} ({cora['n']} seeds)")
        rss, grow = row["peak_rss_mb"], row["inference_rss_increase_mb"]
        lines.append(f"| {row['model']} | {row['setting']} | {units} | {fmt(row['mac_ratio'])} | {fmt(row['time_ratio'])} "
                     f"| {fmt(row['dense_s'])} | {fmt(row['exported_s'])} | {fmt(rss['dense'])} ({fmt(grow['dense'])}) / "
                     f"{fmt(rss['exported'])} ({fmt(grow['exported'])}) "
                     f"| {row['max_abs_diff']:.2e} | {cora_text} | {'yes' if row['within_1.5x_macs_plus_0.05'] else 'NO'} |")
    gcn = [r for r in report["rows"] if "gcn_structured_at_most_0.30" in r]
    if gcn:
        lines += ["", "GCN, structured: time ratio " + ", ".join(fmt(r["time_ratio"]) for r in gcn)
                  + (" (target <= 0.30: met)" if all(r["gcn_structured_at_most_0.30"] for r in gcn) else " (target <= 0.30: NOT met)")]
    if report["errors"]:
        lines += ["", "Failed measurements: " + "; ".join(f"{k}: {v}" for k, v in report["errors"].items())]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Time ratio against MAC ratio, one point per model and setting, with the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if "error" not in r]
    fig, ax = plt.subplots(figsize=(6, 5))
    top = max([1.0] + [max(r["mac_ratio"], r["time_ratio"]) for r in rows]) * 1.05
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1, label="time = MACs")
    for structure, marker in zip(STRUCTURES, ("o", "s")):
        chosen = [r for r in rows if r["setting"].startswith(structure)]
        ax.scatter([r["mac_ratio"] for r in chosen], [r["time_ratio"] for r in chosen], marker=marker, label=structure)
        for r in chosen:
            ax.annotate(r["model"], (r["mac_ratio"], r["time_ratio"]), textcoords="offset points", xytext=(4, 3), fontsize=8)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("MAC ratio of the exported model (exported / dense)")
    ax.set_ylabel("measured inference time ratio (exported / dense)")
    ax.set_title(f"Exported vs dense, {report['size']} size, {report['threads']} threads")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    from gnnprune.machine import apply_malloc_mode

    apply_malloc_mode()  # as benchmarks.speed: may re-execute once with huge pages on ($GNNPRUNE_MALLOC)
    sys.exit(main())
