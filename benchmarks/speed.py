"""Speed and memory of masked propagation at ogbn-arxiv size.

Measures, on a synthetic graph of ogbn-arxiv's size (169,343 nodes, 1,166,243 undirected
edges, 128 features, 40 classes), with a fixed number of CPU threads:

* our dense GCN training epoch vs PyG's default ``GCNConv`` model of the same shape;
* a CGP training epoch (learned edge weights and feature gates, plus its share of mask
  updates: one probe + update every ``update_every`` epochs) vs our dense epoch;
* inference with 20% of the edges kept vs dense inference, for GCN, APPNP, SGC and GAT, and
  with no edge kept (self-loops only): the part of inference no edge pruning can remove;
* the propagation alone (normalised operator of the kept edges times a ``[N, 64]`` matrix), with
  20% vs all of the edges: the part of inference whose cost follows the kept edges;
* dropout (forward + backward) on a ``[N, 256]`` activation: ours vs ``F.dropout``;
* peak resident memory of each measurement (each runs in a fresh subprocess).

Every figure is a median over repeats; all ratios come from one invocation, and ratios between
our own measurements from timings interleaved in one process (see :func:`summarize`). The
script sets ``malloc`` up by ``$GNNPRUNE_MALLOC`` (see :class:`gnnprune.machine.MallocMode`) and
records it. ``--tasks`` runs a subset.

    python -m benchmarks.speed --out results/speed            # full run (~7 min on 2 cores)
    python -m benchmarks.speed --out /tmp/speed --quick       # small graph, smoke test
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from gnnprune.machine import load_average, load_note, malloc_note

ARXIV = dict(num_nodes=169_343, num_edges=1_166_243, num_features=128, num_classes=40)
QUICK = dict(num_nodes=5_000, num_edges=30_000, num_features=32, num_classes=5)
INFERENCE_MODELS = ("gcn", "appnp", "sgc", "gat")


def _graph(cache: Path, quick: bool):
    from gnnprune.data import CSBMConfig, csbm
    from gnnprune.data.graph_data import GraphData
    from gnnprune.graph import EdgeSet

    sizes = QUICK if quick else ARXIV
    if cache.exists():
        s = torch.load(cache, weights_only=True)
        return GraphData("csbm-arxiv-size", s["x"], EdgeSet(s["edges"], s["x"].size(0)), s["y"], s["train"],
                         s["val"], s["test"], int(s["num_classes"]))
    data = csbm(CSBMConfig(**sizes, avg_degree=14.0, homophily=0.65, signal=1.0, train_per_class=20,
                           num_val=min(5000, sizes["num_nodes"] // 5), num_test=min(10000, sizes["num_nodes"] // 4)))
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"x": data.x, "edges": data.edges.edges, "y": data.y, "train": data.train_mask, "val": data.val_mask,
                "test": data.test_mask, "num_classes": data.num_classes}, cache)
    return data


def _timed(fn, repeats: int) -> list[float]:
    return _interleaved({"fn": fn}, repeats)["fn"]


def _interleaved(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Time several callables in turn (a, b, a, b, ...), so that all see the same machine.

    On a shared VM the speed drifts by tens of percent within minutes; a ratio of two
    measurements taken minutes apart inherits that drift, a ratio of interleaved ones does not.
    """
    for fn in fns.values():
        fn()  # warm-up (builds cached patterns)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def _train_step(model, x_fn, graph_fn, loss_fn, optimizer, after=None):
    def step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x_fn(), graph_fn())).backward()
        if after is not None:
            after[0]()
        optimizer.step()
        if after is not None:
            after[1]()
    return step


def task_pyg_gcn(data, repeats):
    import torch.nn.functional as F
    from torch_geometric.nn import GCNConv

    class PygGCN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = GCNConv(data.num_features, 256)
            self.conv2 = GCNConv(256, data.num_classes)

        def forward(self, x, edge_index):
            x = F.dropout(x, 0.5, self.training)
            x = F.relu(self.conv1(x, edge_index))
            return self.conv2(F.dropout(x, 0.5, self.training), edge_index)

    model = PygGCN()
    edge_index = data.edges.directed()
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    loss = lambda out: F.cross_entropy(out[data.train_mask], data.y[data.train_mask])  # noqa: E731
    step = _train_step(model, lambda: data.x, lambda: edge_index, loss, opt)
    return {"epoch_s": _timed(step, repeats)}


def _ours(data, pruning: bool):
    import torch.nn.functional as F

    from gnnprune.copruning import CoPruner
    from gnnprune.nn import build_model
    from gnnprune.training import TrainConfig, make_optimizer

    torch.manual_seed(0)
    model = build_model("gcn", data.num_features, data.num_classes, 256, 2, 0.5)
    pruner = CoPruner(model, data, learn_edge_weights=pruning, learn_feature_gates=pruning)
    opt = make_optimizer(model, pruner, TrainConfig(gate_lr=0.1))
    loss = lambda out: F.cross_entropy(out[data.train_mask], data.y[data.train_mask])  # noqa: E731
    step = _train_step(model, pruner.inputs, pruner.graph, loss, opt, (pruner.mask_gradients, pruner.apply_weight_masks))
    return model, pruner, opt, loss, step


def task_dense_gcn(data, repeats):
    _, _, _, _, step = _ours(data, pruning=False)
    return {"epoch_s": _timed(step, repeats)}


def task_cgp_gcn(data, repeats, targets=(0.8, 0.3, 0.3)):
    from gnnprune.copruning import EdgeRanking, FeatureScore, PruneTargets

    _, _, _, _, dense_step = _ours(data, pruning=False)
    model, pruner, opt, loss, step = _ours(data, pruning=True)
    start = _interleaved({"dense": dense_step, "cgp": step}, repeats)
    updates, probes = [], []
    final = PruneTargets(*targets)
    for fraction in (0.5, 1.0):  # an intermediate and the final update
        t = PruneTargets(final.weights * fraction, final.edges * fraction, final.features * fraction)
        begin = time.perf_counter()
        probe = pruner.probe(loss)
        probes.append(time.perf_counter() - begin)
        pruner.update(t, 0.1 if fraction < 1 else 0.0, probe, opt, edge_ranking=EdgeRanking.GLOBAL,
                      feature_score=FeatureScore.MAGNITUDE)  # the rules the checked-in timings used
        updates.append(time.perf_counter() - begin)
    end = _interleaved({"dense": dense_step, "cgp": step}, repeats)
    return {"epoch_s_all_edges": start["cgp"], "epoch_s_final_masks": end["cgp"],
            "dense_epoch_s_beside_all_edges": start["dense"], "dense_epoch_s_beside_final_masks": end["dense"],
            "update_s": updates, "probe_s": probes, "targets": list(targets), "kept_edges": pruner.kept_edges()}


def task_cgp_run(data, epochs: int, targets=(0.8, 0.3, 0.3)):
    """A whole CGP run with the command's default schedule, in lockstep with a dense run.

    Epoch by epoch: one dense step, then the CGP method's own epoch hook (probe + mask update at
    its update epochs: ``prune_start = epochs // 20``, every 10 epochs, ``prune_end = 3 * epochs
    // 4``) and one CGP step. Alternating keeps both runs on the same machine state, so the ratio
    of the two totals is the cost of CGP over a real run: all edges at first, the cubic schedule,
    the final masks, every update. Evaluation is left out of both.
    """
    from types import SimpleNamespace

    from gnnprune.copruning import PruneTargets
    from gnnprune.methods import CGP, CGPConfig

    _, _, _, _, dense_step = _ours(data, pruning=False)
    model, pruner, opt, loss, step = _ours(data, pruning=True)
    method = CGP(CGPConfig(prune_start=epochs // 20, prune_end=3 * epochs // 4, update_every=10),
                 PruneTargets(*targets))
    run = SimpleNamespace(pruner=pruner, train_loss=loss, optimizer=opt, log=[])
    dense_s, cgp_s, update_s = [], [], []
    for epoch in range(epochs):
        begin = time.perf_counter()
        dense_step()
        dense_s.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        method.on_epoch_start(run, epoch)
        middle = time.perf_counter()
        step()
        cgp_s.append(time.perf_counter() - begin)
        update_s.append(middle - begin)
    return {"epochs": epochs, "dense_epoch_s": dense_s, "cgp_epoch_s": cgp_s, "cgp_update_s": update_s,
            "mask_updates": len(run.log), "final_sparsity": pruner.sparsity_report()["edges"],
            "kept_edges": pruner.kept_edges()}


def _model_keeping_edges(data, model_name: str, edge_keep: float):
    """A fresh ``model_name`` in eval mode and a pruner keeping a seeded random ``edge_keep`` of the edges."""
    from gnnprune.copruning import CoPruner
    from gnnprune.nn import build_model

    torch.manual_seed(0)
    model = build_model(model_name, data.num_features, data.num_classes).eval()
    pruner = CoPruner(model, data)
    if edge_keep < 1.0:
        g = torch.Generator().manual_seed(0)
        n = data.edges.num_edges
        pruner.engine.prune("edges", n - round(edge_keep * n), torch.rand(n, generator=g))
        pruner.refresh()
    return model, pruner


def task_inference(data, repeats, model_name: str, edge_keep: float):
    model, pruner = _model_keeping_edges(data, model_name, edge_keep)

    @torch.no_grad()
    def forward():
        model(pruner.inputs(), pruner.graph())

    return {"inference_s": _timed(forward, repeats), "kept_edges": pruner.kept_edges()}


def task_inference_paired(data, repeats, model_name: str, keeps=(1.0, 0.2, 0.0)):
    """Inference with each fraction of kept edges, interleaved in one process (for the ratios)."""
    forwards = {}
    for keep in keeps:
        model, pruner = _model_keeping_edges(data, model_name, keep)
        forwards[str(keep)] = torch.no_grad()(lambda model=model, pruner=pruner: model(pruner.inputs(), pruner.graph()))
    return {"inference_s": _interleaved(forwards, repeats)}


def _propagation(data, edge_keep: float, width: int):
    """``operator @ h`` for the GCN operator keeping ``edge_keep`` of the edges; returns (fn, entries)."""
    _, pruner = _model_keeping_edges(data, "gcn", edge_keep)
    operator = pruner.graph().gcn_operator()
    h = torch.randn(data.num_nodes, width, generator=torch.Generator().manual_seed(0))
    return torch.no_grad()(lambda: operator @ h), operator.pattern.nnz


def task_propagation(data, repeats, edge_keep: float, width: int = 64):
    propagate, entries = _propagation(data, edge_keep, width)
    return {"propagation_s": _timed(propagate, repeats), "operator_entries": entries, "width": width}


def task_propagation_paired(data, repeats, keeps=(1.0, 0.2, 0.0), width: int = 64):
    """Propagation with each fraction of kept edges, interleaved in one process (for the ratios)."""
    built = {str(keep): _propagation(data, keep, width) for keep in keeps}
    return {"propagation_s": _interleaved({keep: fn for keep, (fn, _) in built.items()}, repeats),
            "operator_entries": {keep: entries for keep, (_, entries) in built.items()}, "width": width}


def task_dropout(data, repeats, width: int = 256):
    import torch.nn.functional as F

    from gnnprune.dropout import dropout

    x = torch.randn(data.num_nodes, width, requires_grad=True)
    grad = torch.ones(data.num_nodes, width)

    def timed(fn):
        def step():
            x.grad = None
            fn(x, 0.5, True).backward(grad)
        return _timed(step, repeats)

    return {"ours_s": timed(dropout), "torch_s": timed(F.dropout), "shape": [data.num_nodes, width]}


def _run_task(args) -> dict:
    torch.set_num_threads(args.threads)
    data = _graph(Path(args.cache), args.quick)
    name = args.task
    if name == "pyg_gcn":
        result = task_pyg_gcn(data, args.repeats)
    elif name == "dense_gcn":
        result = task_dense_gcn(data, args.repeats)
    elif name == "cgp_gcn":
        result = task_cgp_gcn(data, args.repeats)
    elif name == "cgp_run":
        result = task_cgp_run(data, args.run_epochs)
    elif name == "dropout":
        result = task_dropout(data, args.repeats)
    else:
        model_name, keep = name.split("@")
        if keep == "paired" and model_name == "propagation":
            result = task_propagation_paired(data, args.repeats)
        elif keep == "paired":
            result = task_inference_paired(data, args.repeats, model_name)
        elif model_name == "propagation":
            result = task_propagation(data, args.repeats, float(keep))
        else:
            result = task_inference(data, args.repeats, model_name, float(keep))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["allocator"] = malloc_note()
    return result


def _tasks() -> list[str]:
    tasks = ["dense_gcn", "pyg_gcn", "cgp_gcn", "cgp_run", "dropout"]
    for model in INFERENCE_MODELS:
        tasks += [f"{model}@paired", f"{model}@1.0", f"{model}@0.2", f"{model}@0.0"]
    return tasks + ["propagation@paired", "propagation@1.0", "propagation@0.2"]


def run_in_subprocesses(module: str, tasks: list[str], arguments: list[str], desc: str) -> dict:
    """``{task: result}``: each task run as ``python -m MODULE --task TASK ARGUMENTS`` in a fresh process
    (so no task inherits another's allocator state), its result the JSON of its last stdout line;
    a failed task gives ``{"error": its last stderr line}``."""
    from tqdm.auto import tqdm

    results = {}
    for task in tqdm(tasks, desc=desc, file=sys.stderr):
        proc = subprocess.run([sys.executable, "-m", module, "--task", task, *arguments], capture_output=True, text=True)
        if proc.returncode != 0:
            results[task] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
            continue
        results[task] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/speed"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="small graph (smoke test)")
    parser.add_argument("--run-epochs", type=int, default=200,
                        help="epochs of the lockstep dense / CGP run (task cgp_run; default 200, as the command)")
    parser.add_argument("--cache", type=Path, help="graph cache file (default: data/cache/bench/<size>.pt)")
    parser.add_argument("--tasks", help=f"comma-separated subset of: {', '.join(_tasks())} (default: all)")
    parser.add_argument("--task", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    tasks = _tasks() if not args.tasks else [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(_tasks()))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(_tasks())}")
    args.cache = args.cache or Path("data/cache/bench") / ("quick.pt" if args.quick else "arxiv.pt")
    if args.task:
        print(json.dumps(_run_task(args)))
        return 0

    from gnnprune.io import atomic_write_bytes, atomic_write_json

    load = load_average()
    _graph(args.cache, args.quick)  # generate once, outside the timed subprocesses
    results = run_in_subprocesses("benchmarks.speed", tasks, [
        "--threads", str(args.threads), "--repeats", str(args.repeats), "--cache", str(args.cache),
        "--run-epochs", str(args.run_epochs)] + (["--quick"] if args.quick else []), desc="speed")
    report = summarize(results, args)
    report["load_average_at_start"] = load
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "speed.json", report)
    atomic_write_bytes(args.out / "speed.md", markdown(report).encode())
    print(markdown(report))
    return 0


def _median(values):
    return statistics.median(values) if values else float("nan")


def summarize(results: dict, args) -> dict:
    """Medians and ratios. Ratios of our own measurements come from interleaved timings in one
    process (``cgp_gcn`` times a dense step beside every CGP step; ``<model>@paired`` times the
    three edge fractions in turn); the single-variant tasks give peak memory and stand-alone times."""
    def med(task, key):
        entry = results.get(task, {})
        return _median(entry[key]) if key in entry else float("nan")

    def paired_times(model, key="inference_s"):
        return results.get(f"{model}@paired", {}).get(key, {})

    def paired(model, keep, key="inference_s"):
        return _median(paired_times(model, key).get(keep, []))

    def paired_ratio(numerators, denominators):
        """Median over rounds of (this round's numerator / this round's denominator): immune to
        drift slower than one round, which the ratio of two medians is not."""
        return _median([a / b for a, b in zip(numerators, denominators)])

    def ratio_to_all_edges(task, keep, key="inference_s"):
        times = paired_times(task, key)
        return paired_ratio(times.get(keep, []), times.get("1.0", []))

    dense = med("dense_gcn", "epoch_s")
    cgp_step_all = med("cgp_gcn", "epoch_s_all_edges")
    cgp_step_final = med("cgp_gcn", "epoch_s_final_masks")
    dense_beside_all = med("cgp_gcn", "dense_epoch_s_beside_all_edges")
    dense_beside_final = med("cgp_gcn", "dense_epoch_s_beside_final_masks")
    cgp = results.get("cgp_gcn", {})
    update = _median(cgp.get("update_s", []))
    probe = _median(cgp.get("probe_s", []))
    every = 10
    ratios = {
        "pyg_over_ours_dense_epoch": med("pyg_gcn", "epoch_s") / dense,
        "cgp_epoch_all_edges_over_dense": paired_ratio(cgp.get("epoch_s_all_edges", []),
                                                       cgp.get("dense_epoch_s_beside_all_edges", []))
        + update / every / dense_beside_all,
        "cgp_epoch_final_masks_over_dense": paired_ratio(cgp.get("epoch_s_final_masks", []),
                                                         cgp.get("dense_epoch_s_beside_final_masks", []))
        + update / every / dense_beside_final,
    }
    whole = results.get("cgp_run", {})
    ratios["cgp_run_over_dense_run"] = sum(whole.get("cgp_epoch_s", [])) / sum(whole.get("dense_epoch_s", [])) \
        if whole.get("dense_epoch_s") else float("nan")
    for model in INFERENCE_MODELS:
        ratios[f"{model}_inference_20pct_edges_over_dense"] = ratio_to_all_edges(model, "0.2")
        ratios[f"{model}_inference_no_edges_over_dense"] = ratio_to_all_edges(model, "0.0")
    ratios["dropout_ours_over_torch"] = med("dropout", "ours_s") / med("dropout", "torch_s")
    ratios["propagation_20pct_edges_over_dense"] = ratio_to_all_edges("propagation", "0.2", "propagation_s")
    ratios["propagation_no_edges_over_dense"] = ratio_to_all_edges("propagation", "0.0", "propagation_s")
    return {
        "command": "python -m benchmarks.speed " + " ".join(sys.argv[1:]),
        "graph": QUICK if args.quick else ARXIV,
        "size": "quick (smoke test)" if args.quick else "ogbn-arxiv",
        "threads": args.threads,
        "repeats": args.repeats,
        "allocator": sorted({r["allocator"] for r in results.values() if "allocator" in r}),
        "update_every": every,
        "medians_s": {
            "ours_dense_epoch": dense, "pyg_gcnconv_epoch": med("pyg_gcn", "epoch_s"),
            "dense_epoch_beside_cgp_all_edges": dense_beside_all, "dense_epoch_beside_cgp_final_masks": dense_beside_final,
            "cgp_step_all_edges": cgp_step_all, "cgp_step_final_masks": cgp_step_final, "cgp_update": update,
            "cgp_probe": probe,
            "cgp_run_total": sum(whole.get("cgp_epoch_s", [])), "dense_run_total": sum(whole.get("dense_epoch_s", [])),
            "cgp_run_updates_total": sum(whole.get("cgp_update_s", [])),
            **{f"{m}_inference_dense": paired(m, "1.0") for m in INFERENCE_MODELS},
            **{f"{m}_inference_20pct_edges": paired(m, "0.2") for m in INFERENCE_MODELS},
            **{f"{m}_inference_no_edges": paired(m, "0.0") for m in INFERENCE_MODELS},
            **{f"{m}_inference_standalone_{keep}": med(f"{m}@{keep}", "inference_s")
               for m in INFERENCE_MODELS for keep in ("1.0", "0.2", "0.0")},
            "dropout_ours": med("dropout", "ours_s"), "dropout_torch": med("dropout", "torch_s"),
            "propagation_dense": paired("propagation", "1.0", "propagation_s"),
            "propagation_20pct_edges": paired("propagation", "0.2", "propagation_s"),
            "propagation_no_edges": paired("propagation", "0.0", "propagation_s"),
            **{f"propagation_standalone_{keep}": med(f"propagation@{keep}", "propagation_s") for keep in ("1.0", "0.2")},
        },
        "ratios": ratios,
        "peak_rss_mb": {task: r.get("peak_rss_mb") for task, r in results.items()},
        "errors": {task: r["error"] for task, r in results.items() if "error" in r},
        "raw": results,
    }


def markdown(report: dict) -> str:
    m, r = report["medians_s"], report["ratios"]
    lines = [f"# Speed at {report['size']} size",
             "", f"`{report['command']}` — {report['graph']}, {report['threads']} threads, "
             f"medians of {report['repeats']} repeats; {load_note(report.get('load_average_at_start')) or 'machine load not recorded'}; "
             f"allocator: {', '.join(report.get('allocator', [])) or 'not recorded'}.", "",
             "Ratios between our own measurements come from timings interleaved in one process (dense and CGP "
             "steps in turn; inference and propagation at 100%, 20% and 0% of the edges in turn): the median over rounds of "
             "each round's ratio, so that drift of the machine's speed between rounds cancels (the seconds "
             "shown are medians and need not divide to the ratio). The CGP rows add the mask-update share "
             "(update seconds / update interval / the dense median). Peak RSS from a separate process per "
             "variant.", "",
             "| measurement | seconds | ratio | peak RSS (MB) |", "|---|---|---|---|"]
    rss = report["peak_rss_mb"]
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines.append(f"| our dense GCN epoch | {fmt(m['ours_dense_epoch'])} | 1 | {fmt(rss.get('dense_gcn'))} |")
    lines.append(f"| PyG default GCNConv epoch | {fmt(m['pyg_gcnconv_epoch'])} | {fmt(r['pyg_over_ours_dense_epoch'])}× ours | {fmt(rss.get('pyg_gcn'))} |")
    lines.append(f"| CGP epoch, all edges kept (+ update share) | {fmt(m['cgp_step_all_edges'])} + {fmt(m['cgp_update'])}/{report['update_every']} | {fmt(r['cgp_epoch_all_edges_over_dense'])}× dense ({fmt(m['dense_epoch_beside_cgp_all_edges'])} s, interleaved) | {fmt(rss.get('cgp_gcn'))} (both models) |")
    lines.append(f"| CGP epoch, final masks (+ update share) | {fmt(m['cgp_step_final_masks'])} + {fmt(m['cgp_update'])}/{report['update_every']} | {fmt(r['cgp_epoch_final_masks_over_dense'])}× dense ({fmt(m['dense_epoch_beside_cgp_final_masks'])} s, interleaved) | |")
    lines.append(f"| of which the probe pass, per update | {fmt(m['cgp_probe'])} | | |")
    if "cgp_run" in report["raw"]:
        whole = report["raw"]["cgp_run"]
        lines.append(f"| whole CGP run, {whole.get('epochs')} epochs, {whole.get('mask_updates')} mask updates (in lockstep "
                     f"with a dense run of {fmt(m['dense_run_total'])} s) | {fmt(m['cgp_run_total'])} (updates "
                     f"{fmt(m['cgp_run_updates_total'])}) | {fmt(r['cgp_run_over_dense_run'])}× dense run | {fmt(rss.get('cgp_run'))} (both models) |")
    for model in INFERENCE_MODELS:
        lines.append(f"| {model} inference, dense | {fmt(m[f'{model}_inference_dense'])} | 1 | {fmt(rss.get(f'{model}@1.0'))} |")
        lines.append(f"| {model} inference, 20% edges | {fmt(m[f'{model}_inference_20pct_edges'])} | {fmt(r[f'{model}_inference_20pct_edges_over_dense'])}× dense | {fmt(rss.get(f'{model}@0.2'))} |")
        if not math.isnan(m.get(f"{model}_inference_no_edges", float("nan"))):
            lines.append(f"| {model} inference, no edges (self-loops only) | {fmt(m[f'{model}_inference_no_edges'])} | {fmt(r[f'{model}_inference_no_edges_over_dense'])}× dense | {fmt(rss.get(f'{model}@0.0'))} |")
    if "dropout_ours" in m:
        lines.append(f"| dropout p=0.5 on [N, 256], forward + backward, F.dropout | {fmt(m['dropout_torch'])} | 1 | |")
        lines.append(f"| dropout p=0.5 on [N, 256], forward + backward, ours | {fmt(m['dropout_ours'])} | {fmt(r['dropout_ours_over_torch'])}× F.dropout | {fmt(rss.get('dropout'))} |")
    if "propagation_dense" in m:
        lines.append(f"| propagation (operator @ [N, 64]), all edges | {fmt(m['propagation_dense'])} | 1 | {fmt(rss.get('propagation@1.0'))} |")
        lines.append(f"| propagation (operator @ [N, 64]), 20% edges | {fmt(m['propagation_20pct_edges'])} | {fmt(r['propagation_20pct_edges_over_dense'])}× all | {fmt(rss.get('propagation@0.2'))} |")
        lines.append(f"| propagation (operator @ [N, 64]), no edges (self-loops only) | {fmt(m['propagation_no_edges'])} | {fmt(r['propagation_no_edges_over_dense'])}× all | |")
    if report["errors"]:
        lines += ["", "Failed measurements: " + "; ".join(f"{k}: {v}" for k, v in report["errors"].items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from gnnprune.machine import apply_malloc_mode

    apply_malloc_mode()  # may re-execute this script once with huge pages on ($GNNPRUNE_MALLOC)
    sys.exit(main())
