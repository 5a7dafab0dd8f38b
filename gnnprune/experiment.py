"""One pruning experiment, end to end: data -> model -> training -> measurements -> run folder."""
from __future__ import annotations

import dataclasses
import functools
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import (CheckpointError, NonFiniteError, TrainingInterrupted, checkpoint_path, differing_keys,
                         load_checkpoint, save_checkpoint, seed_everything)
from .copruning import CoPruner, PruneTargets, WeightGranularity
from .data import GraphData
from .io import atomic_torch_save, atomic_write_json, check_new_folder
from .machine import malloc_note
from .masks import WeightDistribution
from .methods import (CGP, METHODS, CGPConfig, Dense, Fitted, OneShot, OneShotConfig, PruneMethod, RandomMasks,
                      UGSConfig, fit_ugs)
from .methods import train_once as _train_once
from .minibatch import MiniBatchConfig, train_once_minibatch
from .metrics import mean_std
from .nn import ModelSpec, build_model, model_spec
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

    Build one with :meth:`for_model`, which fills in the defaults of the model and the method
    (the ``gnnprune`` command does the same and only overrides what its flags set).

    Attributes:
        dataset: data set name (see :data:`gnnprune.data.DATASETS`).
        model: architecture of a registered model; ``None`` for a model of your own.
        train: optimisation (the seed field is replaced by each of ``seeds``).
        method: a :class:`~gnnprune.methods.PruneMethod` (or its name).
        targets: final sparsity of weights (every layer), edges and features.
        weight_granularity: prune single weights or whole hidden units (not UGS: element only);
            with units, ``targets.weights`` is the fraction of hidden units removed.
        weight_distribution: spread the weight target uniformly or by ERK (not UGS, not units:
            uniform only).
        cgp, oneshot, ugs: settings of those methods (the others have none).
        seeds: one run per seed.
        minibatch: if set, train on node batches (:mod:`gnnprune.minibatch`); masks stay global.
    """

    dataset: str
    model: ModelConfig | None = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: PruneMethod = PruneMethod.CGP
    targets: PruneTargets = field(default_factory=PruneTargets)
    weight_granularity: WeightGranularity = WeightGranularity.ELEMENT
    weight_distribution: WeightDistribution = WeightDistribution.UNIFORM
    cgp: CGPConfig = field(default_factory=CGPConfig)
    oneshot: OneShotConfig = field(default_factory=OneShotConfig)
    ugs: UGSConfig = field(default_factory=UGSConfig)
    seeds: tuple[int, ...] = (0,)
    minibatch: MiniBatchConfig | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "method", PruneMethod(self.method))
        except ValueError:
            raise ValueError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}") from None
        if self.minibatch is not None and self.method == "ugs":
            raise ValueError("ugs trains full-batch only; drop --batch-size")
        if self.method == "dense" and not self.targets.is_dense:
            raise ValueError("method dense takes no sparsity targets (all must be 0)")
        if self.method == "cgp" and not self.targets.is_dense:
            self.cgp.check_epochs(self.train.epochs)
        if self.method == "ugs" and WeightGranularity(self.weight_granularity) is not WeightGranularity.ELEMENT:
            raise ValueError("ugs prunes single weights only (weight granularity 'element')")
        if self.method == "ugs" and WeightDistribution(self.weight_distribution) is not WeightDistribution.UNIFORM:
            raise ValueError("ugs prunes every weight tensor at the same rate (weight distribution 'uniform')")
        if (WeightGranularity(self.weight_granularity) is WeightGranularity.UNIT
                and WeightDistribution(self.weight_distribution) is not WeightDistribution.UNIFORM):
            raise ValueError("unit pruning removes the same fraction of every unit group (weight distribution 'uniform')")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def for_model(cls, model: str | None = "gcn", *, dataset: str = "", method: PruneMethod | str | None = None,
                  targets: PruneTargets = PruneTargets(), epochs: int | None = None, **fields) -> "ExperimentConfig":
        """The library's configuration of a run: the one source of defaults.

        Model-specific values come from the model's :class:`~gnnprune.nn.ModelSpec`
        (architecture, learning rate, weight decay, epochs, weight distribution, CGP's edge
        prior); for a model of your own (``model=None``) they are the :class:`ModelSpec`
        field defaults. Method-specific values come from the method: the self-training weight
        (:attr:`~gnnprune.training.Method.pseudo_label_weight`, 0.3 for CGP, 0 for the
        baselines, which run as published) and UGS's uniform weight distribution (also that of unit pruning). The pruning
        schedule follows the epochs (:meth:`CGPConfig.for_epochs`), as does the self-training
        warm-up (``epochs // 4``).

        Args:
            model: a registered model name (:data:`gnnprune.nn.MODELS`) or ``None``.
            dataset: recorded in the run's metrics.
            method: default: CGP if any target is above 0, else dense.
            targets: final sparsity of weights, edges and features.
            epochs: training epochs (default: the model's).
            fields: any other :class:`ExperimentConfig` field (``seeds``, ``minibatch``,
                ``weight_granularity``, ...). Change nested fields with :meth:`overridden`.
        """
        spec = ModelSpec(target="") if model is None else model_spec(model)
        try:
            method = PruneMethod.default_for(targets) if method is None else PruneMethod(method)
        except ValueError:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}") from None
        epochs = spec.epochs if epochs is None else epochs
        defaults = {
            "model": None if model is None else ModelConfig(model, spec.hidden_channels, spec.num_layers, spec.dropout,
                                                            dict(spec.options)),
            "train": TrainConfig(epochs=epochs, lr=spec.lr, weight_decay=spec.weight_decay,
                                 pseudo_label_weight=method.hooks.pseudo_label_weight),
            "weight_distribution": (WeightDistribution.UNIFORM
                                    if method is PruneMethod.UGS
                                    or fields.get("weight_granularity") is WeightGranularity.UNIT
                                    else spec.weight_distribution),
            "cgp": CGPConfig.for_epochs(epochs, edge_prior=spec.edge_prior),
        }
        return cls(dataset=dataset, method=method, targets=targets, **{**defaults, **fields})

    def overridden(self, **parts) -> "ExperimentConfig":
        """A copy with some fields replaced; ``None`` values keep the current ones.

        ``parts`` maps a field to its new value or, for a nested configuration (``model``,
        ``train``, ``cgp``, ``oneshot``, ``ugs``), to a dict of its fields:
        ``config.overridden(train={"lr": 0.05}, cgp={"edge_prior": 1e-4}, seeds=(0, 1))``.
        Set ``epochs`` through :meth:`for_model`: the schedule and warm-up derive from it there.
        """
        changes = {}
        for key, value in parts.items():
            current = getattr(self, key)
            if isinstance(value, dict) and dataclasses.is_dataclass(current):
                given = {name: v for name, v in value.items() if v is not None}
                if given:
                    changes[key] = dataclasses.replace(current, **given)
            elif value is not None:
                changes[key] = value
        return dataclasses.replace(self, **changes)


def fit_method(config: ExperimentConfig, model, data: GraphData, train_config: TrainConfig,
               progress: bool = True, **loop) -> Fitted:
    """Train ``model`` under ``config.method``; returns the selected result and its masks.

    ``loop``: checkpoint / resume / stop arguments of :func:`~gnnprune.training.train`. UGS
    runs many trainings: it honours a stop request but neither checkpoints nor resumes.
    """
    targets = config.targets
    layout = {"granularity": WeightGranularity(config.weight_granularity),
              "distribution": WeightDistribution(config.weight_distribution)}
    train_once = _train_once if config.minibatch is None else functools.partial(train_once_minibatch,
                                                                                 batching=config.minibatch)
    if config.method == "ugs":
        if loop.get("resume_from") is not None:
            raise CheckpointError("ugs runs cannot be resumed (its rounds are not checkpointed); start a new run")
        return fit_ugs(model, data, targets, config.ugs, train_config, progress, should_stop=loop.get("should_stop"))
    if config.method == "oneshot":
        finetune = config.oneshot.finetune_epochs or train_config.epochs
        return train_once(OneShot(targets, prune_epoch=train_config.epochs), model, data, train_config,
                          learn_gates=learns_gates(config), epochs=train_config.epochs + finetune,
                          progress=progress, **layout, **loop)
    hooks = {"dense": Dense, "random": lambda: RandomMasks(targets), "cgp": lambda: CGP(config.cgp, targets)}
    return train_once(hooks[config.method](), model, data, train_config, learn_gates=learns_gates(config),
                      progress=progress, **layout, **loop)


def learns_gates(config: ExperimentConfig) -> bool:
    """Whether a run of ``config`` learns edge weights and feature gates (its masks.pt then holds
    ``edge_logit`` and ``feature_gate``): CGP with any target above 0, and one-shot (its dense
    phase gives edges and features a magnitude). UGS's soft masks live in its rounds only; its
    ticket, the pruner it saves, has none."""
    return config.method == "oneshot" or (config.method == "cgp" and not config.targets.is_dense)


def build_pruner(config: ExperimentConfig, model, data: GraphData, seed: int) -> CoPruner:
    """A pruner like the one a run of ``config`` (seed ``seed``) saves as masks.pt, all entries live.

    Load a saved state into it with :meth:`CoPruner.load_state_dict` (strict).
    """
    options = {"learn_edge_weights": learns_gates(config), "learn_feature_gates": learns_gates(config),
               "weight_granularity": WeightGranularity(config.weight_granularity),
               "weight_distribution": WeightDistribution(config.weight_distribution)}
    if config.minibatch is not None:
        from .minibatch import MiniBatchCoPruner

        return MiniBatchCoPruner(model, data, config.minibatch, seed=seed, **options)
    return CoPruner(model, data, **options)


def run_seed(config: ExperimentConfig, data: GraphData, seed: int, progress: bool = True, *,
             checkpoint_file: Path | None = None, checkpoint_every: int = 0, resume_from: dict | None = None,
             should_stop: Callable[[], bool] | None = None) -> tuple[dict, dict]:
    """Train one seed; returns ``(metrics, artifacts)`` (artifacts: tensors to save).

    Args:
        checkpoint_file: where checkpoints go (every ``checkpoint_every`` epochs, at the end and
            at a stop request); ``None``: no checkpoints.
        resume_from: a checkpoint of this seed and config (see :func:`plan_resume`).
        should_stop: see :func:`~gnnprune.training.train`.
    """
    model = build_seed_model(config, data, seed)
    train_config = dataclasses.replace(config.train, seed=seed)
    on_checkpoint = None
    if checkpoint_file is not None:
        stamp = {"config": _plain(config.as_dict()), "seed": seed}
        on_checkpoint = lambda state: save_checkpoint({**state, **stamp}, checkpoint_file)  # noqa: E731
    fitted = fit_method(config, model, data, train_config, progress, checkpoint_every=checkpoint_every,
                        on_checkpoint=on_checkpoint, resume_from=resume_from, should_stop=should_stop)
    return measure_fitted(config, data, seed, model, fitted)


def build_seed_model(config: ExperimentConfig, data: GraphData, seed: int):
    """The model of one seed, initialised after seeding every generator with ``seed``."""
    seed_everything(seed)
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


class ResumeError(ValueError):
    """A run folder cannot be resumed with the given configuration."""


@dataclass
class ResumePlan:
    """What :func:`run_experiment` continues: the record, finished seeds, a checkpoint per unfinished seed."""

    record: dict
    finished: dict[int, dict]
    checkpoints: dict[int, dict]


def plan_resume(config: ExperimentConfig, data: GraphData, out: Path) -> ResumePlan:
    """Check that ``out`` is an unfinished run of ``config`` on ``data``; read what it holds.

    Writes nothing. Raises :class:`ResumeError` (or :class:`CheckpointError`) with one line
    naming the differing configuration keys or the unreadable file.
    """
    out = Path(out)
    path = out / "metrics.json"
    record = _read_json(path, f"nothing to resume in {out}: {path} not found")
    if not isinstance(record, dict) or not {"status", "config", "data", "runs"} <= record.keys():
        raise ResumeError(f"cannot resume from {path}: not a gnnprune run record")
    differing = differing_keys(record["config"], _plain(config.as_dict()))
    differing += [f"data.{key}" for key in differing_keys(record["data"], _plain(data.describe()))]
    if differing:
        raise ResumeError(f"cannot resume {out}: arguments differ from the run's in {', '.join(differing)}")
    if record["status"] == "done":
        raise ResumeError(f"run folder {out} is done; nothing to resume")
    finished, checkpoints = {}, {}
    for seed in config.seeds:
        folder = out / f"seed-{seed}"
        if (folder / "metrics.json").exists():
            finished[seed] = _read_json(folder / "metrics.json", "")
        elif checkpoint_path(folder).exists():
            state = load_checkpoint(checkpoint_path(folder))
            if state.get("seed") != seed or differing_keys(state.get("config", {}), record["config"]):
                raise CheckpointError(f"checkpoint {checkpoint_path(folder)} belongs to another run")
            checkpoints[seed] = state
    return ResumePlan(record, finished, checkpoints)


def _read_json(path: Path, missing: str):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ResumeError(missing or f"{path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResumeError(f"cannot read {path}: {exc}") from None


def _plain(obj):
    return json.loads(json.dumps(obj))


def _summary_row(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("mask_updates", "config", "data")}


def run_experiment(config: ExperimentConfig, data: GraphData, out: Path, progress: bool = True,
                   on_seed=None, *, checkpoint_every: int = 0, resume: ResumePlan | None = None,
                   should_stop: Callable[[], bool] | None = None) -> dict:
    """Run every seed and write the run folder.

    Layout: ``out/metrics.json`` (config, per-seed results, summary, status) and per seed
    ``out/seed-K/{metrics.json, model.pt, masks.pt, pruned_graph.pt, checkpoint.pt}``. Every
    file is written atomically. ``status`` is ``running``, then ``done``; ``interrupted``
    (with where and the checkpoint) after a stop request or abort; ``failed`` (with the error)
    after a non-finite loss.

    Args:
        checkpoint_every: checkpoint each seed every this many epochs (0: only at its end and
            at a stop request).
        resume: from :func:`plan_resume`: finished seeds are kept, not rerun; the seed in
            progress continues from its checkpoint.
        should_stop: polled after every epoch and before every seed.

    Raises:
        TrainingInterrupted: after ``should_stop`` (with ``seed`` and ``checkpoint`` set).
        NonFiniteError: from training (with ``seed`` and ``checkpoint``: the last good one or ``None``);
            this and any other exception leave ``status: failed`` and the error in metrics.json.
    """
    if resume is None:
        check_new_folder(out)
        out.mkdir(parents=True, exist_ok=True)
        record = {"status": "running", "config": config.as_dict(), "data": data.describe(), "runs": []}
        finished = {}
    else:
        for temp in out.rglob(".*.tmp"):  # left by a write that a kill cut short
            temp.unlink()
        stale = ("interrupted", "error", "last_good_checkpoint")
        record = {key: value for key, value in resume.record.items() if key not in stale}
        finished = resume.finished
        record.update(status="running", runs=[_summary_row(finished[s]) for s in config.seeds if s in finished])
        if record["runs"]:
            record["summary"] = summarize(record["runs"])
    atomic_write_json(out / "metrics.json", record)
    for seed in config.seeds:
        if seed in finished:
            if on_seed is not None:
                on_seed(finished[seed])
            continue
        folder = out / f"seed-{seed}"
        checkpoint = checkpoint_path(folder)
        try:
            if should_stop is not None and should_stop():
                raise TrainingInterrupted(-1)
            metrics, artifacts = run_seed(config, data, seed, progress, checkpoint_file=checkpoint,
                                          checkpoint_every=checkpoint_every,
                                          resume_from=None if resume is None else resume.checkpoints.get(seed),
                                          should_stop=should_stop)
        except (TrainingInterrupted, KeyboardInterrupt) as exc:
            saved = checkpoint if checkpoint.exists() else None
            epoch = exc.epoch if isinstance(exc, TrainingInterrupted) and exc.epoch >= 0 else None
            record.update(status="interrupted", interrupted={"seed": seed, "after_epoch": epoch,
                                                             "checkpoint": None if saved is None else str(saved)})
            atomic_write_json(out / "metrics.json", record)
            if isinstance(exc, TrainingInterrupted):
                exc.seed, exc.checkpoint = seed, saved
            raise
        except Exception as exc:  # NonFiniteError, or a crash: the folder says so
            saved = checkpoint if checkpoint.exists() else None
            error = str(exc) if isinstance(exc, NonFiniteError) else f"{type(exc).__name__}: {exc}"
            record.update(status="failed", error=f"seed {seed}: {error}",
                          last_good_checkpoint=None if saved is None else str(saved))
            atomic_write_json(out / "metrics.json", record)
            if isinstance(exc, NonFiniteError):
                exc.seed, exc.checkpoint = seed, saved
            raise
        for name, obj in artifacts.items():
            atomic_torch_save(obj, folder / name)
        atomic_write_json(folder / "metrics.json", {"config": config.as_dict(), "data": data.describe(), **metrics})
        record["runs"].append(_summary_row(metrics))
        record["summary"] = summarize(record["runs"])
        atomic_write_json(out / "metrics.json", record)
        if on_seed is not None:
            on_seed(metrics)
    record["status"] = "done"
    atomic_write_json(out / "metrics.json", record)
    return record
