"""Where data sets are looked for, and where processed copies are written.

Data roots, in order: the ``data_root`` argument (``--data-root``), ``$GNNPRUNE_DATA``, ``./data``,
then the copy of Cora and CiteSeer embedded in the package (:func:`embedded_data_root`). The first
root that holds a data set's files is used.

Processed copies go to the first writable folder of: ``$GNNPRUNE_CACHE``, ``<data_root>/cache`` (an
explicit root or ``$GNNPRUNE_DATA``), ``./data/cache`` (where ``./data`` exists), then the user's
cache folder (``$XDG_CACHE_HOME/gnnprune``, else ``~/.cache/gnnprune``). Nothing is ever written
next to the embedded copy.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_DATA = "GNNPRUNE_DATA"
ENV_CACHE = "GNNPRUNE_CACHE"

_PACKAGE = Path(__file__).resolve().parent.parent


class DataNotFoundError(FileNotFoundError):
    """A data set is not under any data root; the message names every path tried."""


def embedded_data_root() -> Path | None:
    """The data folder shipped with gnnprune (Planetoid raw files of Cora and CiteSeer), if present.

    An installed package carries it as ``gnnprune/_data``; a source checkout has it as the
    repository's top-level ``data/`` folder.
    """
    installed = _PACKAGE / "_data"
    if (installed / "Planetoid").is_dir():
        return installed
    checkout = _PACKAGE.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "data" / "Planetoid").is_dir():
        return checkout / "data"
    return None


def data_roots(data_root: str | os.PathLike | None = None) -> list[Path]:
    """Candidate roots in order: ``data_root``, ``$GNNPRUNE_DATA``, ``./data``, the embedded copy."""
    roots: list[Path] = []
    if data_root is not None:
        roots.append(Path(data_root))
    if os.environ.get(ENV_DATA):
        roots.append(Path(os.environ[ENV_DATA]))
    roots.append(Path("data"))
    embedded = embedded_data_root()
    if embedded is not None:
        roots.append(embedded)
    unique: list[Path] = []
    for root in roots:
        if not any(_same(root, seen) for seen in unique):
            unique.append(root)
    return unique


def _same(a: Path, b: Path) -> bool:
    return a == b or (a.exists() and b.exists() and a.resolve() == b.resolve())


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


def _writable(folder: Path) -> bool:
    """Whether ``folder`` can be created or written: its nearest existing ancestor is writable."""
    probe = folder.absolute()
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/gnnprune``, else ``~/.cache/gnnprune``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gnnprune"


def cache_dir(data_root: str | os.PathLike | None = None) -> Path:
    """Writable folder for processed data (see the module docstring for the order).

    Raises:
        PermissionError: ``$GNNPRUNE_CACHE`` is set but cannot be written.
    """
    if os.environ.get(ENV_CACHE):
        chosen = Path(os.environ[ENV_CACHE])
        if not _writable(chosen):
            raise PermissionError(f"${ENV_CACHE}={chosen} is not writable")
        return chosen
    candidates = []
    explicit = data_root if data_root is not None else os.environ.get(ENV_DATA)
    if explicit:
        candidates.append(Path(explicit) / "cache")
    if Path("data").is_dir():
        candidates.append(Path("data") / "cache")
    candidates.append(user_cache_dir())
    for candidate in candidates:
        if _writable(candidate):
            return candidate
    raise PermissionError(f"no writable cache folder among {', '.join(map(str, candidates))}; set ${ENV_CACHE}")
