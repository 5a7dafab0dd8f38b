"""The machine a measurement runs on: how busy it was at the start, and how memory is allocated."""
from __future__ import annotations

import ctypes
import enum
import math
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path


def load_average() -> float:
    """1-minute load average now (NaN where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def load_note(load: float | None) -> str:
    """``"1-minute load average L at start on N cores"``, or ``""`` when ``load`` is unknown."""
    if load is None or math.isnan(load):
        return ""
    return f"1-minute load average {load:.2f} at start on {os.cpu_count()} cores"


MALLOC_VARIABLE = "GNNPRUNE_MALLOC"
HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_retained = False


class MallocMode(enum.Enum):
    """How the ``gnnprune`` command and the benchmarks set up glibc's ``malloc``.

    Full-graph activations are large (``[N, 256]`` floats at ogbn-arxiv size: 173 MB), and glibc
    serves every request above 32 MiB with a fresh ``mmap`` that is unmapped again on ``free``,
    so each step page-faults all its activations in again, 4 KiB at a time. Measured on this
    project's 2-core machine, dense GCN training step at ogbn-arxiv size (three runs each):
    system default 1.08-1.37 s, peak RSS 1.61-1.63 GiB; ``HUGEPAGES`` 0.75-0.84 s, 1.61-1.62 GiB;
    ``RETAIN`` 0.66-0.80 s, 2.40-2.61 GiB.

    Attributes:
        HUGEPAGES: default. Ask for transparent huge pages on ``malloc``'s mappings (glibc >= 2.35
            tunable ``glibc.malloc.hugetlb=1``; THP must be ``madvise`` or ``always``): 512x
            fewer page faults, same peak memory. Tunables are read at process start, so the
            command re-executes itself once with the tunable set.
        RETAIN: keep freed memory in the heap (``mallopt``: no ``mmap``, no trimming): the
            fastest, but fragmentation raises peak memory by about half.
        SYSTEM: leave ``malloc`` as it is.
    """

    HUGEPAGES = "hugepages"
    RETAIN = "retain"
    SYSTEM = "system"


def malloc_mode(env: Mapping[str, str] | None = None) -> MallocMode:
    """The mode ``$GNNPRUNE_MALLOC`` asks for (default :attr:`MallocMode.HUGEPAGES`)."""
    value = (os.environ if env is None else env).get(MALLOC_VARIABLE, "") or MallocMode.HUGEPAGES.value
    try:
        return MallocMode(value)
    except ValueError:
        choices = ", ".join(m.value for m in MallocMode)
        raise ValueError(f"${MALLOC_VARIABLE}={value!r} is not one of: {choices}") from None


def _glibc_version() -> tuple[int, ...] | None:
    """``(major, minor)`` of the running glibc on Linux; ``None`` elsewhere, ``()`` if unreadable."""
    name, version = platform.libc_ver()
    if platform.system() != "Linux" or name != "glibc":
        return None
    try:
        return tuple(int(v) for v in version.split(".")[:2])
    except ValueError:
        return ()


def _glibc_at_least(major: int, minor: int) -> bool:
    found = _glibc_version()
    return bool(found) and found >= (major, minor)


def _transparent_hugepages() -> str:
    """``always``, ``madvise`` or ``never`` (``never`` where unknown)."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "never"
    chosen = text[text.find("[") + 1:text.find("]")] if "[" in text else ""
    return chosen or "never"


def hugepage_environment(env: Mapping[str, str]) -> dict[str, str] | None:
    """``env`` with ``glibc.malloc.hugetlb=1`` added to ``$GLIBC_TUNABLES``, for a new process.

    Returns ``None`` when there is nothing to do: another mode is asked for, the tunable is
    already set, glibc is older than 2.35 or absent, or transparent huge pages are off.
    """
    if malloc_mode(env) is not MallocMode.HUGEPAGES:
        return None
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb=" in tunables or not _glibc_at_least(2, 35) or _transparent_hugepages() == "never":
        return None
    return {**env, "GLIBC_TUNABLES": f"{tunables}:{HUGEPAGE_TUNABLE}" if tunables else HUGEPAGE_TUNABLE}


def reexec_with_hugepages() -> None:
    """Replace this process by the same command with huge pages on (see :class:`MallocMode`).

    Does nothing (and returns) when :func:`hugepage_environment` has nothing to add. Call it
    first thing in a command's entry point, before anything is printed or written.
    """
    env = hugepage_environment(os.environ)
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(sys.orig_argv), env)


def retain_freed_memory() -> str:
    """Let glibc keep freed memory in the heap for reuse (:attr:`MallocMode.RETAIN`), process-wide.

    Returns:
        what was done, for reports.
    """
    global _retained
    if _glibc_version() is None:
        return "system default malloc (not glibc)"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "system default malloc (mallopt unavailable)"
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_MAX, 0) != 1 or mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) != 1:
        return "system default malloc (mallopt refused)"
    _retained = True
    return malloc_note()


def apply_malloc_mode() -> None:
    """What a command's entry point does: re-execute with huge pages, or retain freed memory."""
    mode = malloc_mode()
    if mode is MallocMode.HUGEPAGES:
        reexec_with_hugepages()
    elif mode is MallocMode.RETAIN:
        retain_freed_memory()


def malloc_note() -> str:
    """How this process's ``malloc`` is set up, for reports."""
    if _retained:
        return "glibc malloc, freed memory retained (mmap and trimming off)"
    if HUGEPAGE_TUNABLE in os.environ.get("GLIBC_TUNABLES", ""):
        return f"glibc malloc, transparent huge pages ({HUGEPAGE_TUNABLE}, THP {_transparent_hugepages()})"
    return "system default malloc"
