"""Where data sets are looked for."""
from __future__ import annotations

import os
from pathlib import Path

ENV_DATA = "GNNPRUNE_DATA"
ENV_CACHE = "GNNPRUNE_CACHE"


class DataNotFoundError(FileNotFoundError):
    """A data set is not under any data root; the message names every path tried."""


def data_roots(data_root: str | os.PathLike | None = None) -> list[Path]:
    """Candidate roots in order: ``data_root``, ``$GNNPRUNE_DATA``, ``./data``, ``../shared/data``."""
    roots: list[Path] = []
    if data_root is not None:
        roots.append(Path(data_root))
    if os.environ.get(ENV_DATA):
        roots.append(Path(os.environ[ENV_DATA]))
    roots += [Path("data"), Path("..") / "shared" / "data"]
    unique: list[Path] = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


def find(relative: str, probe: str, data_root: str | os.PathLike | None = None, what: str | None = None) -> Path:
    """First ``root / relative`` whose ``probe`` file exists.

    Raises:
        DataNotFoundError: naming every path tried.
    """
    tried = []
    for root in data_roots(data_root):
        candidate = root / relative
        if (candidate / probe).exists():
            return candidate
        tried.append(str(candidate.resolve()))
    raise DataNotFoundError(f"{what or relative} not found; tried: {', '.join(tried)}")


def cache_dir(data_root: str | os.PathLike | None = None) -> Path:
    """Writable folder for processed data: ``$GNNPRUNE_CACHE``, else ``<first root>/cache``."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    base = Path(data_root) if data_root is not None else Path(os.environ.get(ENV_DATA) or "data")
    return base / "cache"
