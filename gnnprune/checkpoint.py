"""Checkpoints, exact resume and clean interruption.

A checkpoint is one ``torch.save`` file of plain containers and tensors (loadable with
``weights_only=True``): the model, the optimizer, the :class:`~gnnprune.copruning.CoPruner`
(masks and gates), the method's state, the :class:`~gnnprune.training.TrainingRun` state, the
history, the best model so far and every random number generator the run draws from. Resuming
from it continues the run bit for bit (on CPU, with the same thread count).
"""
from __future__ import annotations

import os
import random
import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .io import atomic_torch_save, safe_torch_load

FORMAT = "gnnprune-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
REQUIRED_KEYS = ("format", "version", "epoch", "train_config", "method", "model", "optimizer", "pruner", "run",
                 "history", "best", "train_time_s", "rng")


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, truncated, tampered with or from another run."""


class TrainingInterrupted(Exception):
    """Training stopped at a signal after ``epoch`` (a checkpoint of that epoch was written)."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"interrupted after epoch {epoch}")
        self.epoch = epoch


class NonFiniteError(FloatingPointError):
    """The loss or a parameter became NaN / inf at ``epoch``; nothing of that epoch was saved."""

    def __init__(self, what: str, epoch: int) -> None:
        super().__init__(f"{what} at epoch {epoch}")
        self.epoch = epoch


# random number generators ---------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed torch's CPU generator, Python's ``random`` and NumPy's global generator."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def rng_state() -> dict:
    """The state of every generator a run may draw from, as tensors and plain containers."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
    }


def set_rng_state(state: Mapping) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached"]))


# files ----------------------------------------------------------------------------------------
def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` (see :func:`gnnprune.training.train`) atomically, stamped with the format."""
    atomic_torch_save({"format": FORMAT, "version": VERSION, **state}, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load and check a checkpoint; any problem is one :class:`CheckpointError` naming the file."""
    try:
        state = safe_torch_load(path)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} not found") from None
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"cannot load {path}: not a gnnprune checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(f"cannot load {path}: checkpoint version {state.get('version')} != {VERSION}")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"cannot load {path}: checkpoint lacks {', '.join(missing)}")
    return state


# configuration checks -------------------------------------------------------------------------
def flatten(config: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def differing_keys(saved: Mapping, current: Mapping) -> list[str]:
    """Dotted keys whose values differ (or exist on one side only), sorted."""
    a, b = flatten(saved), flatten(current)
    return sorted(key for key in a.keys() | b.keys() if a.get(key, _MISSING) != b.get(key, _MISSING))


_MISSING = object()


# signals --------------------------------------------------------------------------------------
class StopRequest:
    """Set by SIGINT / SIGTERM; the training loop polls it after every epoch.

    The first signal only sets the flag (the current epoch finishes and a checkpoint is
    written); a second one raises :class:`KeyboardInterrupt` at once.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + (self.signum or 0)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        os.write(2, f"\n{signal.Signals(signum).name}: finishing this epoch, then writing a checkpoint "
                    "(send it again to abort at once)\n".encode())

    @contextmanager
    def installed(self, signals=(signal.SIGINT, signal.SIGTERM)) -> Iterator["StopRequest"]:
        """Route ``signals`` to this flag inside the block; the previous handlers come back after."""
        previous = {s: signal.signal(s, self._handle) for s in signals}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def checkpoint_path(seed_folder: str | os.PathLike) -> Path:
    return Path(seed_folder) / CHECKPOINT_NAME
