"""One pruning experiment, end to end: data -> model -> training -> measurements -> run folder.

The configuration is :mod:`gnnprune.config`, the measurements :mod:`gnnprune.measure`.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import (CheckpointError, NonFiniteError, TrainingInterrupted, checkpoint_path, differing_keys,
                         load_checkpoint, save_checkpoint, seed_everything)
from .config import ExperimentConfig
from .copruning import CoPruner, WeightGranularity
from .data import GraphData
from .distributed import World, train_once_distributed
from .io import atomic_torch_save, atomic_write_json, check_new_folder
from .masks import WeightDistribution
from .measure import measure_fitted, summarize
from .methods import CGP, Dense, Fitted, OneShot, RandomMasks, fit_colt, fit_jackpot, fit_ugs
from .methods import train_once as _train_once
from .minibatch import train_once_minibatch
from .nn import build_model
from .training import TrainConfig


def fit_method(config: ExperimentConfig, model, data: GraphData, train_config: TrainConfig,
               progress: bool = True, world: World | None = None, **loop) -> Fitted:
    """Train ``model`` under ``config.method``; returns the selected result and its masks.

    ``loop``: checkpoint / resume / stop arguments of :func:`~gnnprune.training.train`. UGS
    runs many trainings: it honours a stop request but neither checkpoints nor resumes.
    ``world``: this rank of a data-parallel run (:mod:`gnnprune.distributed`); ``None``: one process.
    """
    targets = config.targets
    layout = {"granularity": WeightGranularity(config.weight_granularity),
              "distribution": WeightDistribution(config.weight_distribution)}
    train_once = _train_once if config.minibatch is None else functools.partial(train_once_minibatch,
                                                                                 batching=config.minibatch)
    if world is not None:
        if config.method == "ugs":
            raise ValueError("ugs cannot run data-parallel (its rounds are separate trainings); run it in one process")
        train_once = functools.partial(train_once_distributed, world=world, batching=config.minibatch)
    if config.method == "ugs":
        if loop.get("resume_from") is not None:
            raise CheckpointError("ugs runs cannot be resumed (its rounds are not checkpointed); start a new run")
        return fit_ugs(model, data, targets, config.ugs, train_config, progress, should_stop=loop.get("should_stop"),
                       distribution=layout["distribution"])
    if config.method == "jackpot":
        if loop.get("resume_from") is not None:
            raise CheckpointError("jackpot runs cannot be resumed (the search is not checkpointed); start a new run")
        dense = None if config.jackpot.from_run is None else dense_from_run(config, model, data, train_config.seed)
        if dense is None:
            # the dense phase's pruner lays out weights as the final one does
            dense = _train_once(Dense(), model, data, train_config, learn_gates=learns_gates(config),
                                progress=progress, **layout)
        return fit_jackpot(model, data, targets, config.jackpot, train_config, progress, dense=dense)
    if config.method == "colt":
        if loop.get("resume_from") is not None:
            raise CheckpointError("colt runs cannot be resumed (its rounds are not checkpointed); start a new run")
        return fit_colt(model, data, targets, config.ugs, train_config, progress, should_stop=loop.get("should_stop"),
                        distribution=layout["distribution"])
    if config.method == "oneshot":
        finetune = config.oneshot.finetune_epochs or train_config.epochs
        method = OneShot(targets, prune_epoch=train_config.epochs, early_bird=config.oneshot.early_bird)
        return train_once(method, model, data, train_config,
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
    return (config.method == "oneshot" or (config.method == "cgp" and not config.targets.is_dense)
            or (config.method == "jackpot" and config.jackpot.dense_gates))


def dense_from_run(config: ExperimentConfig, model, data: GraphData, seed: int) -> Fitted:
    """Seed ``seed`` of the dense run ``config.jackpot.from_run``, loaded into ``model`` with an all-live pruner.

    Raises:
        ValueError: the run is of another model or data set, or has pruned entries, or its gates
            do not match ``config.jackpot.dense_gates``.
    """
    from .runs import load_run
    from .training import TrainResult

    source = load_run(config.jackpot.from_run, seed, data=data)
    where = f"{config.jackpot.from_run} seed {seed}"
    if source.config.model != config.model or source.config.dataset != config.dataset:
        raise ValueError(f"{where} is a {source.config.model.name if source.config.model else 'custom'} model on "
                         f"{source.config.dataset!r}, not the {config.model.name} on {config.dataset!r} asked for")
    pruned = [site.name for site in source.pruner.engine if site.live < site.numel]
    if pruned:
        raise ValueError(f"{where} is not dense: site {pruned[0]!r} has pruned entries")
    if learns_gates(source.config) != config.jackpot.dense_gates:
        raise ValueError(f"{where} {'has' if learns_gates(source.config) else 'has no'} learned edge weights and "
                         f"feature gates; run jackpot with dense_gates={learns_gates(source.config)}")
    model.load_state_dict(source.model.state_dict())
    pruner = build_pruner(config, model, data, seed)
    pruner.load_state_dict(source.pruner.state_dict())
    m = source.metrics
    result = TrainResult(m["best_epoch"], m["val"], m["test"], m["train"], m["train_time_s"], m["epochs"], [], [],
                         model.state_dict(), pruner.state_dict())
    return Fitted(result, pruner)


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
             should_stop: Callable[[], bool] | None = None, world: World | None = None) -> tuple[dict, dict]:
    """Train one seed; returns ``(metrics, artifacts)`` (artifacts: tensors to save).

    Args:
        checkpoint_file: where checkpoints go (every ``checkpoint_every`` epochs, at the end and
            at a stop request); ``None``: no checkpoints.
        resume_from: a checkpoint of this seed and config (see :func:`plan_resume`).
        should_stop: see :func:`~gnnprune.training.train`.
        world: this rank of a data-parallel run (only rank 0 writes checkpoints); ``None``: one process.
    """
    model = build_seed_model(config, data, seed)
    train_config = dataclasses.replace(config.train, seed=seed)
    on_checkpoint = None
    if checkpoint_file is not None:
        stamp = {"config": _plain(config.as_dict()), "seed": seed}
        on_checkpoint = lambda state: save_checkpoint({**state, **stamp}, checkpoint_file)  # noqa: E731
    fitted = fit_method(config, model, data, train_config, progress, world, checkpoint_every=checkpoint_every,
                        on_checkpoint=on_checkpoint, resume_from=resume_from, should_stop=should_stop)
    return measure_fitted(config, data, seed, model, fitted)


def build_seed_model(config: ExperimentConfig, data: GraphData, seed: int):
    """The model of one seed, initialised after seeding every generator with ``seed``."""
    seed_everything(seed)
    m = config.model
    return build_model(m.name, data.num_features, data.num_classes, m.hidden_channels, m.num_layers, m.dropout,
                       **m.options)


class ResumeError(ValueError):
    """A run folder cannot be resumed with the given configuration."""


@dataclass
class ResumePlan:
    """What :func:`run_experiment` continues: the record, finished seeds, a checkpoint per unfinished seed."""

    record: dict
    finished: dict[int, dict]
    checkpoints: dict[int, dict]


def plan_resume(config: ExperimentConfig, data: GraphData, out: Path, world_size: int = 1) -> ResumePlan:
    """Check that ``out`` is an unfinished run of ``config`` on ``data`` (trained on ``world_size``
    processes); read what it holds.

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
    saved_world = record.get("distributed", {}).get("world_size", 1)
    if saved_world != world_size:
        raise ResumeError(f"cannot resume {out}: it was trained on {saved_world} process(es), this run has "
                          f"{world_size}; resume with the same number of processes")
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


_WRITERS = (atomic_write_json, atomic_torch_save)


def _skip_write(obj, path) -> None:
    """What a rank other than 0 does instead of writing a file of the run folder."""


def _summary_row(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("mask_updates", "config", "data")}


def run_experiment(config: ExperimentConfig, data: GraphData, out: Path, progress: bool = True,
                   on_seed=None, *, checkpoint_every: int = 0, resume: ResumePlan | None = None,
                   should_stop: Callable[[], bool] | None = None, world: World | None = None) -> dict:
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
        world: this rank of a data-parallel run: every rank trains, rank 0 alone writes (the record
            then has ``distributed``: world size and backend); ``None``: one process.

    Raises:
        TrainingInterrupted: after ``should_stop`` (with ``seed`` and ``checkpoint`` set).
        NonFiniteError: from training (with ``seed`` and ``checkpoint``: the last good one or ``None``);
            this and any other exception leave ``status: failed`` and the error in metrics.json.
    """
    writer = world is None or world.is_writer
    atomic_write_json, atomic_torch_save = _WRITERS if writer else (_skip_write, _skip_write)
    if resume is None:
        if writer:
            check_new_folder(out)
            out.mkdir(parents=True, exist_ok=True)
        record = {"status": "running", "config": config.as_dict(), "data": data.describe(), "runs": []}
        if world is not None:
            record["distributed"] = world.describe()
        finished = {}
    else:
        for temp in out.rglob(".*.tmp") if writer else ():  # left by a write that a kill cut short
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
                                          should_stop=should_stop, world=world)
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
