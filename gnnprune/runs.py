"""A finished run folder read back: the pruned model at the weights behind its reported scores.

A run folder (:func:`gnnprune.experiment.run_experiment`) holds ``metrics.json`` with the full
configuration and, per seed, ``seed-K/{metrics.json, model.pt, masks.pt, pruned_graph.pt}``.
:func:`load_run` rebuilds the model and the pruner from the recorded configuration
(:func:`~gnnprune.experiment.build_pruner`, the same function the run used) and loads the
files strictly: a missing, unexpected or misshapen key, or a weight alive where its mask is
dead, is a :class:`RunFileError` naming the file and the key.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .checkpoint import differing_keys
from .config import ExperimentConfig
from .copruning import WEIGHT_PREFIX, CoPruner, PrunerStateError
from .data import GraphData, load_dataset
from .experiment import build_pruner
from .graph import MaskedGraph
from .io import safe_torch_load
from .metrics import get_evaluator
from .nn import GraphModel, build_model

RUN_FILES = ("metrics.json", "model.pt", "masks.pt")


class RunFileError(ValueError):
    """A file of a run folder is missing, unreadable or does not fit the recorded run (one line)."""


@dataclass
class LoadedRun:
    """One seed of a run folder, loaded.

    Attributes:
        config: the run's configuration.
        seed: the seed loaded.
        data: the data set (the one the run recorded).
        model: the model at the selected epoch's weights, in eval mode.
        pruner: its masks and learned gates.
        metrics: the seed's ``metrics.json``.
        folder: the seed's folder.
    """

    config: ExperimentConfig
    seed: int
    data: GraphData
    model: GraphModel
    pruner: CoPruner
    metrics: dict
    folder: Path

    @property
    def graph(self) -> MaskedGraph:
        """The kept edges with their learned weights."""
        return self.pruner.graph()

    @property
    def kept_features(self) -> Tensor:
        """``[F_kept]`` indices of the kept input feature columns."""
        return self.pruner.kept_feature_index()

    @torch.no_grad()
    def predict(self) -> Tensor:
        """``[N, C]`` logits of the masked model on the kept graph and features (eval mode)."""
        self.model.eval()
        return self.model(self.pruner.inputs(), self.pruner.graph())

    def evaluate(self) -> dict[str, float]:
        """Score of :meth:`predict` on each split, by the data set's metric.

        Equals the recorded ``val`` and ``test`` of the seed (the run saved the weights and
        masks of the epoch it selected and reported).
        """
        logits = self.predict()
        score = get_evaluator(self.data.metric)
        return {split: score(logits, self.data.y, getattr(self.data, f"{split}_mask")) for split in ("train", "val", "test")}


def load_run(run_dir: str | Path, seed: int | None = None, *, data: GraphData | None = None,
             data_root: str | Path | None = None) -> LoadedRun:
    """Load one seed of a run folder.

    Args:
        run_dir: the folder ``gnnprune prune --out`` wrote.
        seed: which seed (default: the first finished one, in the order of the run's seeds).
        data: the data set, if already loaded (must be the one the run recorded); else it is
            loaded by name from ``data_root``.
        data_root: where data sets live (see :func:`gnnprune.data.load_dataset`).

    Raises:
        RunFileError: a file is missing, corrupt or does not fit (the message names the file
            and the key), the seed is not in the run, or the data set differs from the run's.
    """
    run_dir = Path(run_dir)
    record = _run_record(run_dir)
    config = run_config(run_dir)
    seed = _pick_seed(run_dir, config, seed)
    folder = run_dir / f"seed-{seed}"
    for name in RUN_FILES:
        if not (folder / name).is_file():
            raise RunFileError(f"run {run_dir} has no finished seed {seed}: {folder / name} not found")
    metrics = _read_json(folder / "metrics.json")
    if data is None:
        data = load_dataset(config.dataset, data_root)
    differing = differing_keys(record["data"], json.loads(json.dumps(data.describe())))
    if differing:
        raise RunFileError(f"data set {config.dataset!r} differs from the one run {run_dir} recorded in "
                           f"{', '.join(differing)}")
    m = config.model
    with torch.random.fork_rng(devices=[]):  # building draws initial weights; leave the caller's generator alone
        model = build_model(m.name, data.num_features, data.num_classes, m.hidden_channels, m.num_layers, m.dropout,
                            **m.options)
        pruner = build_pruner(config, model, data, seed)
    state = _load(folder / "model.pt")
    _check_model_state(model, state, folder / "model.pt")
    model.load_state_dict(state)
    masks = _load(folder / "masks.pt")
    try:
        pruner.load_state_dict(masks)
    except PrunerStateError as exc:
        raise RunFileError(f"cannot load {folder / 'masks.pt'}: {exc}") from None
    for name in pruner.weights:
        alive = int((state[name] != 0).logical_and(~pruner.weight_mask(name)).sum())
        if alive:
            raise RunFileError(f"cannot load {folder / 'masks.pt'}: key 'masks.{WEIGHT_PREFIX}{name}' is dead where "
                               f"{alive} weights of {name!r} in model.pt are not zero (files of different runs?)")
    model.eval()
    return LoadedRun(config, seed, data, model, pruner, metrics, folder)


def run_config(run_dir: str | Path) -> ExperimentConfig:
    """The configuration a run folder recorded (``metrics.json``); :class:`RunFileError` if unreadable."""
    path = Path(run_dir) / "metrics.json"
    try:
        return config_from_dict(_run_record(Path(run_dir))["config"])
    except (TypeError, ValueError) as exc:
        if isinstance(exc, RunFileError):
            raise
        raise RunFileError(f"cannot load {path}: {exc}") from None


def _run_record(run_dir: Path) -> dict:
    record = _read_json(run_dir / "metrics.json")
    for key in ("config", "data"):
        if not isinstance(record, dict) or key not in record:
            raise RunFileError(f"cannot load {run_dir / 'metrics.json'}: missing key '{key}' (not a gnnprune run record)")
    return record


def config_from_dict(record: Mapping) -> ExperimentConfig:
    """The :class:`ExperimentConfig` recorded in a run's ``metrics.json`` (its ``config`` entry).

    Keys the record lacks take their defaults; an unknown key is an error naming it.
    """
    return _build(ExperimentConfig, record, "config")


def _build(cls, value, where: str):
    if not isinstance(value, Mapping):
        raise ValueError(f"key '{where}' holds {type(value).__name__}, expected a dict")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - names)
    if unknown:
        raise ValueError(f"unknown key '{where}.{unknown[0]}'")
    kwargs = {name: _convert(hints[name], item, f"{where}.{name}") for name, item in value.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"key '{where}': {exc}") from None


def _convert(kind, value, where: str):
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if value is None:
            return None
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, where)
    if typing.get_origin(kind) is tuple:
        return tuple(value)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(value)
    return value


def _pick_seed(run_dir: Path, config: ExperimentConfig, seed: int | None) -> int:
    if seed is not None:
        if seed not in config.seeds:
            raise RunFileError(f"run {run_dir} has no seed {seed}; its seeds are {', '.join(map(str, config.seeds))}")
        return seed
    for candidate in config.seeds:
        if all((run_dir / f"seed-{candidate}" / name).is_file() for name in RUN_FILES):
            return candidate
    raise RunFileError(f"run {run_dir} has no finished seed (no seed-K folder with {', '.join(RUN_FILES)})")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFileError(f"{path} not found (not a gnnprune run folder?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFileError(f"cannot read {path}: {exc}") from None


def _load(path: Path):
    try:
        return safe_torch_load(path)
    except ValueError as exc:
        raise RunFileError(str(exc)) from None


def _check_model_state(model: torch.nn.Module, state, path: Path) -> None:
    """Raise :class:`RunFileError` naming the first key of ``state`` that does not fit ``model``."""
    if not isinstance(state, Mapping):
        raise RunFileError(f"cannot load {path}: expected a state_dict, got {type(state).__name__}")
    check_state_dict(state, model.state_dict(), path)


def check_state_dict(state: Mapping, expected: Mapping[str, Tensor], path: Path) -> None:
    """Raise :class:`RunFileError` on the first missing, unexpected or misshapen key of ``state``."""
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    for kind, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            raise RunFileError(f"cannot load {path}: {kind} key '{keys[0]}'{more}")
    for key, like in expected.items():
        value = state[key]
        if not torch.is_tensor(value) or value.shape != like.shape:
            got = list(value.shape) if torch.is_tensor(value) else type(value).__name__
            raise RunFileError(f"cannot load {path}: key '{key}' is {got}, expected shape {list(like.shape)}")
