"""Atomic outputs and run folders: a crash never leaves a half-written file."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def safe_torch_load(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` with one clear error naming a corrupt file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises several types for truncated / tampered files
        if "Weights only load failed" in str(exc):
            reason = "it holds objects other than tensors and plain containers, refused by weights_only=True"
        else:
            text = str(exc).strip()
            name = type(exc).__name__
            reason = f"{name}: {text.splitlines()[0][:200]}" if text else f"{name}, empty or cut short"
        raise ValueError(f"cannot load {path}: not a valid gnnprune file ({reason})") from None


class OutputExistsError(FileExistsError):
    """The output folder exists and is not empty."""


def check_new_folder(path: str | os.PathLike) -> Path:
    """Raise :class:`OutputExistsError` if ``path`` exists and is non-empty (or is a file)."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise OutputExistsError(f"output folder {path} already exists and is not empty; choose another --out")
    return path


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if missing) across processes.

    For first-time preparation of a shared cache: two runs started together must not both copy
    raw files or process a data set while the other reads the half-written result (seen as an
    ``EOFError`` from PyG's processed file). POSIX ``flock`` on ``<folder>/.lock``; where
    ``fcntl`` does not exist (Windows) the block runs unlocked.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
