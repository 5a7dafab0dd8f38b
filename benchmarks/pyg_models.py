"""Models written with torch_geometric layers, co-pruned through ``gnnprune.prune``.

Three models of the kind a PyG user writes (two ``GCNConv`` layers; an MLP followed by
``APPNP``; one ``SGConv``) are pruned on a Planetoid graph to the given targets, one run per
seed, with the library's defaults unless a model's row below sets its own optimiser settings.
``--timing`` also times the training step and the inference forward of the PyG GCN against
this package's GCN of the same shape (hidden 256), interleaved in one process, medians.
``--own-loop`` compares a training loop written with the pruner's hooks (plain cross-entropy,
its own Adam) against the built-in loop. Prints JSON and writes it to ``--out``.

    python -m benchmarks.pyg_models --dataset cora --seeds 0,1,2,3,4 --threads 1 --timing --own-loop \\
        --out results/pyg-models/runs.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def models():
    from torch_geometric.nn import APPNP, GCNConv, SGConv

    class GCN(torch.nn.Module):
        def __init__(self, f, c, hidden=256):
            super().__init__()
            self.conv1, self.conv2 = GCNConv(f, hidden), GCNConv(hidden, c)

        def forward(self, x, edge_index, edge_weight=None):
            x = F.relu(self.conv1(F.dropout(x, 0.5, self.training), edge_index, edge_weight))
            return self.conv2(F.dropout(x, 0.5, self.training), edge_index, edge_weight)

    class APPNPNet(torch.nn.Module):
        def __init__(self, f, c, hidden=64):
            super().__init__()
            self.lin1, self.lin2 = torch.nn.Linear(f, hidden), torch.nn.Linear(hidden, c)
            self.prop = APPNP(K=10, alpha=0.1)

        def forward(self, x, edge_index, edge_weight=None):
            x = F.relu(self.lin1(F.dropout(x, 0.5, self.training)))
            return self.prop(self.lin2(F.dropout(x, 0.5, self.training)), edge_index, edge_weight)

    class SGC(torch.nn.Module):
        def __init__(self, f, c):
            super().__init__()
            self.conv = SGConv(f, c, K=2)

        def forward(self, x, edge_index, edge_weight=None):
            return self.conv(x, edge_index, edge_weight)

    #: name -> (class, optimiser settings that differ from the library's defaults)
    return {"gcn": (GCN, {}), "appnp": (APPNPNet, {}), "sgc": (SGC, {"lr": 0.2, "weight_decay": 5e-5})}


def prune_runs(data, names, seeds, targets, epochs, progress):
    import gnnprune as gp

    rows = []
    for name in names:
        cls, train = models()[name]
        config = gp.ExperimentConfig.for_model(None, dataset=data.name, targets=targets, epochs=epochs)
        config = config.overridden(train=train)
        for seed in seeds:
            torch.manual_seed(seed)
            result = gp.prune(cls(data.num_features, data.num_classes), data, config=config, seed=seed,
                              progress=progress)
            m = result.metrics
            rows.append({"model": name, "seed": seed, "test": m["test"], "val": m["val"], "best_epoch": m["best_epoch"],
                         "kept_edges": m["sparsity"]["kept_edges"], "kept_features": m["sparsity"]["kept_features"],
                         "kept_weights": {k: [w["live"], w["entries"]] for k, w in m["sparsity"]["per_weight"].items()},
                         "epoch_time_s": m["epoch_time_s"], "train_settings": train})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    summary = {}
    for name in names:
        tests = [r["test"] for r in rows if r["model"] == name]
        summary[name] = {"mean": statistics.mean(tests), "std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                         "min": min(tests), "n": len(tests)}
    return rows, summary


def timing(data, repeats):
    """Median wall time of one CGP training step and one inference forward at the final masks, the PyG
    GCN against this package's GCN, and against the same PyG GCN trained unpruned (full graph, no gates)."""
    import gnnprune as gp
    from gnnprune.api import as_graph_model
    from gnnprune.training import TrainingRun, full_batch_step, make_optimizer

    targets = gp.PruneTargets(0.9, 0.5, 0.5)
    pieces = {}
    for name in ("native", "pyg"):
        torch.manual_seed(0)
        module = gp.build_model("gcn", data.num_features, data.num_classes, 256) if name == "native" \
            else models()["gcn"][0](data.num_features, data.num_classes)
        model = as_graph_model(module, data, targets)
        pruner = gp.CoPruner(model, data, learn_edge_weights=True, learn_feature_gates=True)
        probe = pruner.probe(lambda logits: F.cross_entropy(logits[data.train_mask], data.y[data.train_mask]))
        pruner.update(targets, 0.0, probe)  # time the pruned state: half the edges and features, 10% of the weights
        config = gp.TrainConfig(pseudo_label_weight=0.3)
        run = TrainingRun(model, data, pruner, make_optimizer(model, pruner, config), config,
                          method=gp.CGP(gp.CGPConfig(), targets))
        pieces[name] = run
    torch.manual_seed(0)
    plain = models()["gcn"][0](data.num_features, data.num_classes)  # the PyG GCN without any pruning
    plain_optimizer = torch.optim.Adam(plain.parameters(), lr=0.01, weight_decay=5e-4)
    x, edge_index = data.x, data.edges.directed()
    times = {name: {"train_step": [], "inference": []} for name in (*pieces, "pyg_unpruned")}
    for _ in range(repeats):
        plain.train()
        start = time.perf_counter()
        plain_optimizer.zero_grad()
        F.cross_entropy(plain(x, edge_index)[data.train_mask], data.y[data.train_mask]).backward()
        plain_optimizer.step()
        times["pyg_unpruned"]["train_step"].append(time.perf_counter() - start)
        plain.eval()
        with torch.no_grad():
            start = time.perf_counter()
            plain(x, edge_index)
            times["pyg_unpruned"]["inference"].append(time.perf_counter() - start)
        for name, run in pieces.items():
            run.model.train()
            start = time.perf_counter()
            full_batch_step(run, run.method)
            times[name]["train_step"].append(time.perf_counter() - start)
            run.model.eval()
            with torch.no_grad():
                start = time.perf_counter()
                run.model(run.pruner.inputs(), run.pruner.graph())
                times[name]["inference"].append(time.perf_counter() - start)
    medians = {name: {part: statistics.median(values) for part, values in parts.items()} for name, parts in times.items()}
    ratio = lambda a, b: {part: medians[a][part] / medians[b][part] for part in ("train_step", "inference")}  # noqa: E731
    return {"repeats": repeats, "median_s": medians, "pyg_over_native": ratio("pyg", "native"),
            "pyg_over_pyg_unpruned": ratio("pyg", "pyg_unpruned")}


def own_loop(data, seed, targets, epochs, progress):
    """The PyG GCN trained by a loop of your own through ``gnnprune.attach`` (Adam, best validation
    epoch after the masks are final) against ``gnnprune.prune``, same seed, with two objectives:
    plain cross-entropy (``pseudo_label_weight`` 0 for ``prune``), and CGP's default objective
    with its self-training term (the loop calls ``run.train_loss`` and ``run.set_pseudo_labels``)."""
    import gnnprune as gp

    cls = models()["gcn"][0]
    plain_ce = lambda out: F.cross_entropy(out[data.train_mask], data.y[data.train_mask])  # noqa: E731
    rows = {}
    for objective, weight, loss_fn in (("cross_entropy", 0.0, plain_ce), ("cgp_default", None, None)):
        config = gp.ExperimentConfig.for_model(None, dataset=data.name, targets=targets, epochs=epochs)
        config = config.overridden(train={"pseudo_label_weight": weight})
        torch.manual_seed(seed)
        built_in = gp.prune(cls(data.num_features, data.num_classes), data, config=config, seed=seed,
                            progress=progress)
        torch.manual_seed(seed)
        model = cls(data.num_features, data.num_classes)
        torch.manual_seed(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
        run = gp.attach(model, data, optimizer, loss_fn=loss_fn, config=config, seed=seed)
        best = (-1.0, 0.0, -1)
        for epoch in range(epochs):
            run.before_step(epoch)
            model.train()
            optimizer.zero_grad()
            run.step(run.train_loss(model(*run.inputs())))
            model.eval()
            with torch.no_grad():
                logits = model(*run.inputs())
            run.set_pseudo_labels(logits)  # used by the self-training term only
            pred = logits.argmax(-1)
            val, test = ((pred[m] == data.y[m]).float().mean().item() for m in (data.val_mask, data.test_mask))
            if run.method.selectable(epoch) and val > best[0]:
                best = (val, test, epoch)
        rows[objective] = {
            "pseudo_label_weight": built_in.config.train.pseudo_label_weight,
            "prune": {"test": built_in.test, "val": built_in.metrics["val"], "best_epoch": built_in.metrics["best_epoch"]},
            "own_loop": {"test": best[1], "val": best[0], "best_epoch": best[2]},
            "difference_points": 100 * (best[1] - built_in.test),
            "kept": [int(run.pruner.engine.mask(part).sum()) for part in ("edges", "features")]}
        print(json.dumps({objective: rows[objective]}), file=sys.stderr, flush=True)
    return {"seed": seed, **rows}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cora")
    parser.add_argument("--data-root")
    parser.add_argument("--models", default="gcn,appnp,sgc")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--targets", default="0.9,0.5,0.5", help="weights,edges,features removed")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timing", action="store_true")
    parser.add_argument("--timing-repeats", type=int, default=30)
    parser.add_argument("--own-loop", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import torch_geometric

    import gnnprune as gp

    data = gp.load_dataset(args.dataset, args.data_root)
    targets = gp.PruneTargets(*(float(t) for t in args.targets.split(",")))
    seeds = [int(s) for s in args.seeds.split(",")]
    record = {"command": " ".join(["python -m benchmarks.pyg_models", *(argv if argv is not None else sys.argv[1:])]),
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "torch_geometric": torch_geometric.__version__, "gnnprune": gp.__version__},
              "cpu": _cpu_model(), "threads": args.threads, "date": time.strftime("%Y-%m-%d"),
              "dataset": data.name, "targets": vars(targets), "epochs": args.epochs}
    if args.timing:
        record["timing"] = timing(data, args.timing_repeats)
    if args.own_loop:
        record["own_loop"] = own_loop(data, seeds[0], targets, args.epochs, not args.no_progress)
    names = [n for n in args.models.split(",") if n]
    if names:
        record["runs"], record["summary"] = prune_runs(data, names, seeds, targets, args.epochs, not args.no_progress)
    text = json.dumps(record, indent=2)
    if args.out:
        from gnnprune.io import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    print(text)
    return record


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
