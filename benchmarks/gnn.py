"""Grid benchmark of pruning methods: data sets x models x methods x sparsity levels x seeds.

A small TOML file defines the grid (see ``benchmarks/configs/``); every run is exactly the
``gnnprune prune`` command recorded beside its result, with the file's ``[options]`` as extra
flags. Writes ``OUT/``:

* ``runs/<id>.json``: one finished run each (config, command, metrics); written atomically, so
  a rerun skips what is there (resumable: interrupt and rerun the same command);
* ``results.csv``: one row per run; ``summary.json`` and ``README.md``: mean ± std over seeds of
  accuracy, sparsities reached, MACs, training epochs and wall time, inference latency;
* ``accuracy_vs_weight_sparsity.png``, ``accuracy_vs_edge_sparsity.png``, ``training_cost.png``.

UGS and COLT are iterative: their levels share one trajectory per (data set, model, seed), and a
level's cost counts every round up to it plus its own ticket run. Besides the ``--method`` names, a grid
may list the variants of :data:`VARIANTS` (a method with extra flags, such as ``ugs-eb``: UGS with
the early-bird stop).

    python -m benchmarks.gnn --config benchmarks/configs/planetoid.toml --out results/planetoid-baselines
    python -m benchmarks.gnn --config benchmarks/configs/smoke.toml --out /tmp/smoke      # seconds
    python -m benchmarks.gnn --config ... --out ... --report-only     # re-aggregate only
    python -m benchmarks.gnn --config ... --out ... --only model=gcn --only level=1   # part of the grid
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import math
import platform
import re
import statistics
import sys
import time
import tomllib
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

GRID_KEYS = {"name", "datasets", "models", "methods", "seeds", "levels", "threads", "epochs", "options"}

_EARLY_BIRD = ("--early-bird-window", "5", "--early-bird-threshold", "0.1")
#: grid method names that run a ``--method`` with extra flags: name -> (method, flags)
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "oneshot-eb": ("oneshot", _EARLY_BIRD),  # one-shot, dense phase ended by the early-bird monitor
    "ugs-eb": ("ugs", _EARLY_BIRD),          # UGS, each round ended by the early-bird monitor
    # the same, but no round ends before its 50th epoch
    "ugs-eb-min50": ("ugs", _EARLY_BIRD + ("--early-bird-min-epochs", "50")),
}


#: methods whose levels share one trajectory (one job computes every level)
TRAJECTORY_METHODS = ("ugs", "colt")


def base_method(name: str) -> str:
    """The ``--method`` a grid method name runs (itself, or its variant's)."""
    return VARIANTS[name][0] if name in VARIANTS else name


@dataclass(frozen=True)
class Level:
    weights: float
    edges: float
    features: float

    def __post_init__(self) -> None:
        from gnnprune.copruning import PruneTargets

        PruneTargets(self.weights, self.edges, self.features)  # validates each in [0, 1)


@dataclass(frozen=True)
class Grid:
    """The benchmark grid read from a TOML file.

    Attributes:
        options: extra ``gnnprune prune`` flags for every run (``{"pseudo-label-weight": 0.3}``
            becomes ``--pseudo-label-weight 0.3``).
        epochs: ``--epochs`` for every run (default: each model's own).
    """

    name: str
    datasets: tuple[str, ...]
    models: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    levels: tuple[Level, ...]
    threads: int = 1
    epochs: int | None = None
    options: tuple[tuple[str, object], ...] = ()


def load_grid(path: Path) -> Grid:
    """Read and validate a grid file; errors name the file and the bad entry."""
    from gnnprune.data import check_dataset_name
    from gnnprune.methods import METHODS
    from gnnprune.nn import model_spec

    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: cannot read grid file: {exc}") from None
    unknown = set(raw) - GRID_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(GRID_KEYS)}")
    try:
        grid = Grid(name=str(raw["name"]), datasets=tuple(raw["datasets"]), models=tuple(raw["models"]),
                    methods=tuple(raw["methods"]), seeds=tuple(int(s) for s in raw["seeds"]),
                    levels=tuple(Level(float(v["weights"]), float(v["edges"]), float(v["features"]))
                                 for v in raw.get("levels", [])),
                    threads=int(raw.get("threads", 1)), epochs=raw.get("epochs"),
                    options=tuple(sorted(raw.get("options", {}).items())))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: bad or missing entry: {exc}") from None
    for dataset in grid.datasets:
        check_dataset_name(dataset)
    for model in grid.models:
        model_spec(model)
    for method in grid.methods:
        if method not in METHODS and method not in VARIANTS:
            raise ValueError(f"{path}: unknown method {method!r}; choose from {', '.join([*METHODS, *VARIANTS])}")
    if any(m != "dense" for m in grid.methods) and not grid.levels:
        raise ValueError(f"{path}: pruning methods need at least one entry in levels")
    for axis in ("weights", "edges", "features"):
        values = [getattr(level, axis) for level in grid.levels]
        if values != sorted(values):
            raise ValueError(f"{path}: levels must not decrease in {axis} (UGS and COLT walk through them in order)")
    return grid


# the plan -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One result: a method at one level (``None`` for dense) on one seed."""

    dataset: str
    model: str
    method: str
    level: int | None
    seed: int

    @property
    def id(self) -> str:
        dataset = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.dataset)
        level = "dense" if self.level is None else f"L{self.level}"
        return f"{dataset}__{self.model}__{self.method}__{level}__s{self.seed}"


def plan(grid: Grid) -> list[list[Run]]:
    """Jobs, each a list of runs computed together (one run, or every level of a trajectory)."""
    jobs = []
    for model in grid.models:  # one model on every data set first: the report fills in useful order
        for dataset in grid.datasets:
            for method in grid.methods:
                for seed in grid.seeds:
                    if method == "dense":
                        jobs.append([Run(dataset, model, method, None, seed)])
                    elif base_method(method) in TRAJECTORY_METHODS:
                        jobs.append([Run(dataset, model, method, i, seed) for i in range(len(grid.levels))])
                    else:
                        jobs.extend([Run(dataset, model, method, i, seed)] for i in range(len(grid.levels)))
    return jobs


def command(grid: Grid, run: Run) -> list[str]:
    """The ``gnnprune prune`` arguments of one run (without ``--out``)."""
    args = ["prune", "--dataset", run.dataset, "--model", run.model, "--method", base_method(run.method),
            "--seed", str(run.seed), "--threads", str(grid.threads), "--no-progress",
            *VARIANTS.get(run.method, ("", ()))[1]]
    if run.level is not None:
        level = grid.levels[run.level]
        args += ["--weight-sparsity", f"{level.weights:g}", "--edge-sparsity", f"{level.edges:g}",
                 "--feature-sparsity", f"{level.features:g}"]
    if grid.epochs is not None:
        args += ["--epochs", str(grid.epochs)]
    for key, value in grid.options:
        args += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return args


def experiment_config(grid: Grid, run: Run):
    """Exactly the configuration the CLI builds for :func:`command`."""
    from gnnprune.cli import _config_from_args, build_parser

    args = build_parser().parse_args([*command(grid, run), "--out", "unused"])
    return _config_from_args(args)


# running ------------------------------------------------------------------------------------
_DATA_CACHE: dict = {}


def _data(name: str, data_root):
    from gnnprune.data import load_dataset

    if name not in _DATA_CACHE:
        _DATA_CACHE[name] = load_dataset(name, data_root)
    return _DATA_CACHE[name]


def run_job(grid: Grid, job: list[Run], out: Path, data_root=None) -> list[str]:
    """Train the runs of one job and write ``out/runs/<id>.json`` for each; returns the ids."""
    import torch

    from gnnprune.experiment import build_seed_model, fit_method
    from gnnprune.io import atomic_write_json
    from gnnprune.measure import measure_fitted
    from gnnprune.methods import fit_colt_levels, fit_ugs_levels

    if not pending([job], out):  # finished meanwhile (another harness process on the same folder)
        return [run.id for run in job]
    torch.set_num_threads(grid.threads)
    configs = [experiment_config(grid, run) for run in job]
    first, seed = configs[0], job[0].seed
    data = _data(first.dataset, data_root)
    model = build_seed_model(first, data, seed)
    train_config = dataclasses.replace(first.train, seed=seed)
    if first.method in TRAJECTORY_METHODS:
        fit_levels = {"ugs": fit_ugs_levels, "colt": fit_colt_levels}[first.method.value]
        fitted = fit_levels(model, data, [c.targets for c in configs], first.ugs, train_config, progress=False,
                            distribution=first.weight_distribution)
    else:
        fitted = [fit_method(first, model, data, train_config, progress=False)]
    for run, config, result in zip(job, configs, fitted):
        metrics, _ = measure_fitted(config, data, seed, model, result)
        metrics.pop("mask_updates", None)
        record = {"run": dataclasses.asdict(run), "command": "gnnprune " + " ".join(command(grid, run)),
                  "config": config.as_dict(), "metrics": metrics}
        atomic_write_json(out / "runs" / f"{run.id}.json", record)
    return [run.id for run in job]


ONLY_FIELDS = ("dataset", "model", "method", "level", "seed")


def select(filters: list[str]):
    """``["method=dense,cgp", "model=gat", "level=1"]`` -> a predicate on :class:`Run`.

    Levels are their indices in the grid file (``dense`` for the dense runs), seeds their numbers.
    """
    allowed: dict[str, set[str]] = {}
    for item in filters:
        field, sep, values = item.partition("=")
        if not sep or field not in ONLY_FIELDS:
            raise ValueError(f"bad --only {item!r}; use {'=..., '.join(ONLY_FIELDS)}=... (comma-separated)")
        allowed[field] = set(values.split(","))

    def value(run: Run, field: str) -> str:
        raw = getattr(run, field)
        return "dense" if raw is None else str(raw)

    return lambda run: all(value(run, field) in values for field, values in allowed.items())


def chosen(jobs: list[list[Run]], keep) -> list[list[Run]]:
    """The jobs with at least one run ``keep`` accepts (a trajectory is one job over all levels)."""
    return [job for job in jobs if any(map(keep, job))]


def pending(jobs: list[list[Run]], out: Path) -> list[list[Run]]:
    """Jobs with at least one run whose result file is missing."""
    return [job for job in jobs if not all((out / "runs" / f"{run.id}.json").exists() for run in job)]


# aggregation --------------------------------------------------------------------------------
CSV_FIELDS = ("dataset", "model", "method", "level", "target_weights", "target_edges", "target_features", "seed",
              "test", "val", "best_epoch", "weight_sparsity", "edge_sparsity", "feature_sparsity", "macs_ratio",
              "epochs", "train_time_s", "inference_ms")


def rows(grid: Grid, out: Path) -> list[dict]:
    """One flat row per finished run of the grid (runs of other grids in ``out`` are ignored)."""
    import json

    result = []
    for job in plan(grid):
        for run in job:
            path = out / "runs" / f"{run.id}.json"
            if not path.exists():
                continue
            try:
                m = json.loads(path.read_text())["metrics"]
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{path}: corrupt result file ({exc}); delete it to rerun") from None
            level = grid.levels[run.level] if run.level is not None else Level(0.0, 0.0, 0.0)
            result.append({
                "dataset": run.dataset, "model": run.model, "method": run.method,
                "level": "" if run.level is None else run.level, "target_weights": level.weights,
                "target_edges": level.edges, "target_features": level.features, "seed": run.seed,
                "test": m["test"], "val": m["val"], "best_epoch": m["best_epoch"],
                "weight_sparsity": m["sparsity"]["weights"], "edge_sparsity": m["sparsity"]["edges"],
                "feature_sparsity": m["sparsity"]["features"], "macs_ratio": m["macs"]["ratio"],
                "epochs": m["epochs"], "train_time_s": m["train_time_s"],
                "inference_ms": 1000 * m["inference_time_s"]})
    return result


def summarize(table: list[dict]) -> list[dict]:
    """Mean ± sample std over seeds per (data set, model, method, level)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in table:
        groups[(row["dataset"], row["model"], row["method"], row["level"])].append(row)
    summary = []
    for (dataset, model, method, level), members in groups.items():
        entry = {"dataset": dataset, "model": model, "method": method, "level": level, "seeds": len(members),
                 **{k: members[0][k] for k in ("target_weights", "target_edges", "target_features")}}
        for key in ("test", "weight_sparsity", "edge_sparsity", "feature_sparsity", "macs_ratio", "epochs",
                    "train_time_s", "inference_ms"):
            values = [r[key] for r in members]
            entry[key] = {"mean": statistics.fmean(values),
                          "std": statistics.stdev(values) if len(values) > 1 else 0.0}
        summary.append(entry)
    return summary


def markdown(grid: Grid, summary: list[dict], argv: list[str], finished: int, total: int) -> str:
    lines = [f"# Benchmark `{grid.name}`", "",
             "Produced (and resumed, when interrupted) by", "", "```", "python -m benchmarks.gnn " + " ".join(_producing(argv)),
             "```", "",
             f"{finished} of {total} runs finished. Test accuracy at the epoch of best validation accuracy "
             "(pruning methods: once their masks are final), mean ± sample std over seeds. Sparsities are the "
             "fractions actually removed; MACs relative to the dense model; epochs and wall time are the whole "
             f"training cost (every UGS or COLT round; one-shot's dense phase and fine-tuning); {grid.threads} CPU "
             f"thread(s), {platform.processor() or platform.machine()}, Python {platform.python_version()}. "
             "Each run's exact command is in `runs/<id>.json`.", ""]
    for dataset in grid.datasets:
        for model in grid.models:
            entries = [e for e in summary if e["dataset"] == dataset and e["model"] == model]
            if not entries:
                continue
            entries.sort(key=lambda e: (grid.methods.index(e["method"]), -1 if e["level"] == "" else e["level"]))
            lines += [f"## {dataset} · {model}", "",
                      "| method | target w / e / f | test acc | seeds | removed w / e / f | MACs | epochs | train s | infer ms |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for e in entries:
                target = "—" if e["level"] == "" else f"{e['target_weights']:g} / {e['target_edges']:g} / {e['target_features']:g}"
                lines.append(
                    f"| {e['method']} | {target} | {_pm(e['test'])} | {e['seeds']} | "
                    f"{e['weight_sparsity']['mean']:.4f} / {e['edge_sparsity']['mean']:.4f} / "
                    f"{e['feature_sparsity']['mean']:.4f} | {e['macs_ratio']['mean']:.4f} | "
                    f"{e['epochs']['mean']:.0f} | {e['train_time_s']['mean']:.1f} | {e['inference_ms']['mean']:.2f} |")
            lines.append("")
    return "\n".join(lines)


def _producing(argv: list[str]) -> list[str]:
    """The command line that produces the results: without the report-only and speed flags."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--report-only", "--no-plots"):
            continue
        elif arg in ("--jobs", "--only"):
            skip = True
        elif not arg.startswith(("--jobs=", "--only=")):
            kept.append(arg)
    return kept


def _pm(stat: dict) -> str:
    return f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def plots(grid: Grid, summary: list[dict], out: Path) -> list[Path]:
    """Accuracy vs weight and vs edge sparsity (one line per method, seed error bars) and cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    panels = [(d, m) for d in grid.datasets for m in grid.models]
    cols = min(3, len(panels))
    rows_ = math.ceil(len(panels) / cols)
    colors = dict(zip(("dense", "random", "oneshot", "ugs", "cgp", "colt", "oneshot-eb", "ugs-eb", "ugs-eb-min50",
                       "jackpot"),
                      ("black", "tab:gray", "tab:orange", "tab:blue", "tab:red", "tab:green", "tab:brown",
                       "tab:cyan", "tab:olive", "tab:purple")))
    for axis, label in (("weight_sparsity", "weight sparsity (fraction removed)"),
                        ("edge_sparsity", "edge sparsity (fraction removed)")):
        fig, axes = plt.subplots(rows_, cols, figsize=(5 * cols, 3.8 * rows_), squeeze=False)
        for ax, (dataset, model) in zip(axes.flat, panels):
            for method in grid.methods:
                entries = sorted((e for e in summary if e["dataset"] == dataset and e["model"] == model
                                  and e["method"] == method), key=lambda e: e[axis]["mean"])
                if not entries:
                    continue
                if method == "dense":
                    mean, std = entries[0]["test"]["mean"], entries[0]["test"]["std"]
                    ax.axhline(mean, color=colors["dense"], lw=1, ls="--", label="dense")
                    ax.axhspan(mean - std, mean + std, color=colors["dense"], alpha=0.08)
                    continue
                ax.errorbar([e[axis]["mean"] for e in entries], [e["test"]["mean"] for e in entries],
                            yerr=[e["test"]["std"] for e in entries], marker="o", capsize=3,
                            color=colors.get(method), label=method)
            ax.set_title(f"{dataset} · {model}")
            ax.set_xlabel(label)
            ax.set_ylabel("test accuracy")
            ax.grid(alpha=0.3)
            if ax.has_data():
                ax.legend(fontsize=8)
            else:
                ax.text(0.5, 0.5, "no finished runs yet", ha="center", va="center", transform=ax.transAxes)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        fig.tight_layout()
        path = out / f"accuracy_vs_{axis}.png"
        _save(fig, path)
        plt.close(fig)
        written.append(path)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    methods = [m for m in grid.methods if any(e["method"] == m for e in summary)]
    for ax, key, label in ((axes[0], "epochs", "training epochs (all rounds)"),
                           (axes[1], "train_time_s", "training wall time (s)")):
        width = 0.8 / max(1, len(panels))
        for i, (dataset, model) in enumerate(panels):
            means, stds = [], []
            for method in methods:
                values = [e[key] for e in summary if e["dataset"] == dataset and e["model"] == model
                          and e["method"] == method]
                means.append(statistics.fmean(v["mean"] for v in values) if values else 0.0)
                stds.append(statistics.fmean(v["std"] for v in values) if values else 0.0)
            xs = [j + (i - (len(panels) - 1) / 2) * width for j in range(len(methods))]
            ax.bar(xs, means, width, yerr=stds, capsize=2, label=f"{dataset} · {model}")
        ax.set_xticks(range(len(methods)), methods)
        ax.set_yscale("log")
        ax.set_ylabel(label + ", mean over levels")
        ax.set_xlabel("method")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = out / "training_cost.png"
    _save(fig, path)
    plt.close(fig)
    written.append(path)
    return written


def _save(fig, path: Path) -> None:
    from gnnprune.io import atomic_write_bytes

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())


def report(grid: Grid, out: Path, argv: list[str], with_plots: bool = True) -> dict:
    """Aggregate the finished runs into CSV, JSON, markdown and plots."""
    from gnnprune.io import atomic_write_json, atomic_write_text

    table = rows(grid, out)
    summary = summarize(table)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(table)
    atomic_write_text(out / "results.csv", text.getvalue())
    total = sum(len(job) for job in plan(grid))
    atomic_write_json(out / "summary.json", {"grid": dataclasses.asdict(grid), "finished": len(table),
                                             "total": total, "summary": summary})
    atomic_write_text(out / "README.md", markdown(grid, summary, argv, len(table), total))
    if with_plots and summary:
        plots(grid, summary, out)
    return {"finished": len(table), "total": total}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gnn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="grid file (TOML)")
    parser.add_argument("--out", type=Path, required=True, help="results folder (finished runs are kept and skipped)")
    parser.add_argument("--data-root", type=Path)
    parser.add_argument("--jobs", type=int, default=1, help="parallel worker processes")
    parser.add_argument("--only", action="append", default=[], metavar="FIELD=V1,V2",
                        help="run only the jobs with a run whose dataset / model / method / level (index in the "
                             "grid file, or dense) / seed is one of the values "
                             "(repeatable; the report still covers the whole grid)")
    parser.add_argument("--report-only", action="store_true", help="only aggregate what is finished")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    try:
        grid = load_grid(args.config)
    except ValueError as exc:
        print(f"benchmarks.gnn: error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        keep = select(args.only)
    except ValueError as exc:
        print(f"benchmarks.gnn: error: {exc}", file=sys.stderr)
        return 2
    todo = [] if args.report_only else chosen(pending(plan(grid), args.out), keep)
    from tqdm.auto import tqdm

    start = time.perf_counter()
    with tqdm(total=len(todo), desc=f"bench {grid.name}", unit="job") as bar:
        if args.jobs > 1:
            with ProcessPoolExecutor(args.jobs) as pool:
                for _ in pool.map(run_job, [grid] * len(todo), todo, [args.out] * len(todo),
                                  [args.data_root] * len(todo)):
                    bar.update()
        else:
            for job in todo:
                bar.set_postfix_str(job[0].id, refresh=False)
                run_job(grid, job, args.out, args.data_root)
                bar.update()
    counts = report(grid, args.out, argv, with_plots=not args.no_plots)
    print(f"{len(todo)} jobs run in {time.perf_counter() - start:.1f} s; "
          f"{counts['finished']}/{counts['total']} runs finished; wrote {args.out}/README.md")
    return 0


if __name__ == "__main__":
    from gnnprune.machine import apply_malloc_mode

    apply_malloc_mode()  # may re-execute this script once with huge pages on ($GNNPRUNE_MALLOC)
    sys.exit(main())
