"""Measurements of a trained run: accuracy, sparsity, MACs and timings of the selected state,
the kept graph it saves, and the summary over seeds."""
from __future__ import annotations

import statistics
import time

import torch

from .config import ExperimentConfig
from .copruning import CoPruner
from .data import GraphData
from .machine import malloc_note
from .methods import Fitted, PruneMethod
from .metrics import mean_std
from .training import TrainResult, evaluate


def measure_fitted(config: ExperimentConfig, data: GraphData, seed: int, model, fitted: Fitted) -> tuple[dict, dict]:
    """Load the selected state into ``model`` and measure it; returns ``(metrics, artifacts)``."""
    m = config.model
    result, pruner = fitted.result, fitted.pruner
    model.load_state_dict(result.model_state)
    pruner.load_state_dict(result.pruner_state)
    metrics = _measure(model, pruner, data, result)
    metrics.update(seed=seed, method=PruneMethod(config.method).value, dataset=data.name,
                   model=None if m is None else m.name)
    artifacts = {
        "model.pt": model.state_dict(),
        "masks.pt": pruner.state_dict(),
        "pruned_graph.pt": pruned_graph(pruner),
    }
    return metrics, artifacts


def pruned_graph(pruner: CoPruner) -> dict:
    """Kept edges and their learned weights, kept feature indices.

    ``edge_index`` ``[2, 2E]`` holds both directions of each of the ``E`` kept undirected
    edges and ``edge_weight`` ``[2E]`` one weight per column (``None`` where edge weights are
    not learned: all 1), so ``torch_geometric.data.Data(edge_index=..., edge_weight=...)``
    takes them as they are; ``undirected_edges`` ``[2, E]`` and ``undirected_edge_weight``
    ``[E]`` are the same edges once each.
    """
    keep = pruner.engine.mask("edges")
    kept = pruner.edge_set.edges[:, keep]
    weight = pruner.edge_weight()
    weight = None if weight is None else weight.detach()[keep].clone()
    return {
        "num_nodes": pruner.edge_set.num_nodes,
        "undirected_edges": kept.clone(),
        "undirected_edge_weight": weight,
        "edge_index": torch.cat([kept, kept.flip(0)], dim=1),
        "edge_weight": None if weight is None else weight.repeat(2),
        "feature_index": pruner.kept_feature_index(),
        "feature_gate": None if pruner.feature_gate is None else pruner.feature_gate.detach()[pruner.kept_feature_index()].clone(),
    }


def _measure(model, pruner: CoPruner, data: GraphData, result: TrainResult) -> dict:
    _, scores = evaluate(model, pruner, data)
    n = data.num_nodes
    dense_weights = {name: p.numel() for name, p in pruner.weights.items()}
    dense_layers = model.macs(n, data.edges.num_edges, dense_weights)
    pruned_layers = model.macs(n, pruner.kept_edges(), pruner.kept_weights(), pruner.live_units())
    total = lambda layers: sum(layer["transform"] + layer["aggregation"] for layer in layers)  # noqa: E731
    early_bird = any("early_bird" in update for update in result.updates)
    return {
        "best_epoch": result.best_epoch,
        "val": result.val,
        "test": result.test,
        "train": result.train,
        "final_check": scores,
        "sparsity": pruner.sparsity_report(),
        "macs": {"dense": total(dense_layers), "pruned": total(pruned_layers),
                 "ratio": total(pruned_layers) / total(dense_layers),
                 "per_layer": [{"layer": d["layer"], "dense": d, "pruned": p}
                               for d, p in zip(dense_layers, pruned_layers)]},
        "train_time_s": result.train_time_s,
        "epochs": result.epochs_run,
        "epoch_time_s": result.train_time_s / result.epochs_run,
        "inference_time_s": inference_time(model, pruner),
        "malloc": malloc_note(),  # times depend on it (see gnnprune.machine.MallocMode)
        "mask_updates": result.updates,
        **({"early_bird": _early_bird_summary(result.updates)} if early_bird else {}),
        **next(({"jackpot": update["jackpot"]} for update in result.updates if "jackpot" in update), {}),
    }


def _early_bird_summary(updates: list[dict]) -> dict:
    """One-shot: its monitor's record; UGS: each round's and the epochs saved over all rounds."""
    if not any("round" in update for update in updates):
        return next(update["early_bird"] for update in updates if "early_bird" in update)
    rounds = [update["early_bird"] for update in updates if "early_bird" in update]
    return {"epochs_saved": sum(record["epochs_saved"] for record in rounds), "rounds": rounds}


@torch.no_grad()
def inference_time(model, pruner: CoPruner, repeats: int = 5) -> float:
    """Median wall time of one full-graph forward pass (eval mode, kept graph)."""
    model.eval()
    model(pruner.inputs(), pruner.graph())  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(pruner.inputs(), pruner.graph())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def summarize(runs: list[dict]) -> dict:
    """Mean and std over seeds of the headline numbers."""
    keys = {"test": lambda r: r["test"], "val": lambda r: r["val"],
            "weight_sparsity": lambda r: r["sparsity"]["weights"], "edge_sparsity": lambda r: r["sparsity"]["edges"],
            "feature_sparsity": lambda r: r["sparsity"]["features"], "macs_ratio": lambda r: r["macs"]["ratio"],
            "train_time_s": lambda r: r["train_time_s"], "inference_time_s": lambda r: r["inference_time_s"]}
    return {key: mean_std([get(r) for r in runs]) for key, get in keys.items()}
