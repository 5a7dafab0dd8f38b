"""One pruning experiment, end to end: data -> model -> training -> measurements -> run folder."""
from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .copruning import CoPruner, PruneTargets, WeightGranularity
from .data import GraphData
from .io import atomic_torch_save, atomic_write_json, check_new_folder
from .methods import (CGP, METHODS, CGPConfig, Dense, Fitted, OneShot, OneShotConfig, RandomMasks, UGSConfig,
                      fit_ugs, train_once)
from .metrics import mean_std
from .nn import build_model
from .training import TrainConfig, TrainResult, evaluate


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the model to prune."""

    name: str = "gcn"
    hidden_channels: int = 256
    num_layers: int = 2
    dropout: float = 0.5
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.hidden_channels < 1 or self.num_layers < 1:
            raise ValueError("hidden_channels and num_layers must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one ``gnnprune prune`` run needs; recorded verbatim in metrics.json.

    Attributes:
        dataset: data set name (see :data:`gnnprune.data.DATASETS`).
        model: architecture.
        train: optimisation (the seed field is replaced by each of ``seeds``).
        method: one of :data:`gnnprune.methods.METHODS`.
        targets: final sparsity of weights (every layer), edges and features.
        weight_granularity: prune single weights or whole output units (not UGS: element only).
        cgp, oneshot, ugs: settings of those methods (the others have none).
        seeds: one run per seed.
    """

    dataset: str
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: str = "cgp"
    targets: PruneTargets = field(default_factory=PruneTargets)
    weight_granularity: WeightGranularity = WeightGranularity.ELEMENT
    cgp: CGPConfig = field(default_factory=CGPConfig)
    oneshot: OneShotConfig = field(default_factory=OneShotConfig)
    ugs: UGSConfig = field(default_factory=UGSConfig)
    seeds: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.method == "dense" and not self.targets.is_dense:
            raise ValueError("method dense takes no sparsity targets (all must be 0)")
        if self.method == "cgp" and not self.targets.is_dense:
            self.cgp.check_epochs(self.train.epochs)
        if self.method == "ugs" and WeightGranularity(self.weight_granularity) is not WeightGranularity.ELEMENT:
            raise ValueError("ugs prunes single weights only (weight granularity 'element')")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def fit_method(config: ExperimentConfig, model, data: GraphData, train_config: TrainConfig,
               progress: bool = True) -> Fitted:
    """Train ``model`` under ``config.method``; returns the selected result and its masks."""
    targets, granularity = config.targets, WeightGranularity(config.weight_granularity)
    if config.method == "ugs":
        return fit_ugs(model, data, targets, config.ugs, train_config, progress)
    if config.method == "oneshot":
        finetune = config.oneshot.finetune_epochs or train_config.epochs
        return train_once(OneShot(targets, prune_epoch=train_config.epochs), model, data, train_config,
                          learn_gates=True, granularity=granularity, epochs=train_config.epochs + finetune,
                          progress=progress)
    hooks = {"dense": Dense, "random": lambda: RandomMasks(targets), "cgp": lambda: CGP(config.cgp, targets)}
    learn_gates = config.method == "cgp" and not targets.is_dense
    return train_once(hooks[config.method](), model, data, train_config, learn_gates=learn_gates,
                      granularity=granularity, progress=progress)


def run_seed(config: ExperimentConfig, data: GraphData, seed: int, progress: bool = True) -> tuple[dict, dict]:
    """Train one seed; returns ``(metrics, artifacts)`` (artifacts: tensors to save)."""
    model = build_seed_model(config, data, seed)
    train_config = dataclasses.replace(config.train, seed=seed)
    fitted = fit_method(config, model, data, train_config, progress)
    return measure_fitted(config, data, seed, model, fitted)


def build_seed_model(config: ExperimentConfig, data: GraphData, seed: int):
    """The model of one seed, initialised under ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    m = config.model
    return build_model(m.name, data.num_features, data.num_classes, m.hidden_channels, m.num_layers, m.dropout,
                       **m.options)


def measure_fitted(config: ExperimentConfig, data: GraphData, seed: int, model, fitted: Fitted) -> tuple[dict, dict]:
    """Load the selected state into ``model`` and measure it; returns ``(metrics, artifacts)``."""
    m = config.model
    result, pruner = fitted.result, fitted.pruner
    model.load_state_dict(result.model_state)
    pruner.load_state_dict(result.pruner_state)
    metrics = _measure(model, pruner, data, result)
    metrics.update(seed=seed, method=config.method, dataset=data.name, model=m.name)
    artifacts = {
        "model.pt": model.state_dict(),
        "masks.pt": pruner.state_dict(),
        "pruned_graph.pt": pruned_graph(pruner),
    }
    return metrics, artifacts


def pruned_graph(pruner: CoPruner) -> dict:
    """Kept undirected edges (and both directions), their learned weights, kept feature indices."""
    keep = pruner.engine.mask("edges")
    kept = pruner.edge_set.edges[:, keep]
    weight = pruner.edge_weight()
    return {
        "num_nodes": pruner.edge_set.num_nodes,
        "undirected_edges": kept.clone(),
        "edge_index": torch.cat([kept, kept.flip(0)], dim=1),
        "edge_weight": None if weight is None else weight.detach()[keep].clone(),
        "feature_index": pruner.kept_feature_index(),
        "feature_gate": None if pruner.feature_gate is None else pruner.feature_gate.detach()[pruner.kept_feature_index()].clone(),
    }


def _measure(model, pruner: CoPruner, data: GraphData, result: TrainResult) -> dict:
    _, scores = evaluate(model, pruner, data)
    n = data.num_nodes
    dense_weights = {name: p.numel() for name, p in pruner.weights.items()}
    dense_layers = model.macs(n, data.edges.num_edges, dense_weights)
    pruned_layers = model.macs(n, pruner.kept_edges(), pruner.kept_weights())
    total = lambda layers: sum(layer["transform"] + layer["aggregation"] for layer in layers)  # noqa: E731
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
        "mask_updates": result.updates,
    }


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


def run_experiment(config: ExperimentConfig, data: GraphData, out: Path, progress: bool = True,
                   on_seed=None) -> dict:
    """Run every seed and write the run folder.

    Layout: ``out/metrics.json`` (config, per-seed results, summary, status) and per seed
    ``out/seed-K/{metrics.json, model.pt, masks.pt, pruned_graph.pt}``. Every file is
    written atomically; ``status`` is ``running`` until all seeds are done.
    """
    check_new_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"status": "running", "config": config.as_dict(), "data": data.describe(), "runs": []}
    atomic_write_json(out / "metrics.json", record)
    for seed in config.seeds:
        metrics, artifacts = run_seed(config, data, seed, progress)
        folder = out / f"seed-{seed}"
        for name, obj in artifacts.items():
            atomic_torch_save(obj, folder / name)
        atomic_write_json(folder / "metrics.json", {"config": config.as_dict(), "data": data.describe(), **metrics})
        record["runs"].append({k: v for k, v in metrics.items() if k != "mask_updates"})
        record["summary"] = summarize(record["runs"])
        atomic_write_json(out / "metrics.json", record)
        if on_seed is not None:
            on_seed(metrics)
    record["status"] = "done"
    atomic_write_json(out / "metrics.json", record)
    return record
