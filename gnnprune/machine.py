"""The machine a measurement runs on: how busy it was at the start, and how memory is allocated."""
from __future__ import annotations

import ctypes
import math
import os
import platform


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


_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
OPT_OUT_VARIABLE = "GNNPRUNE_SYSTEM_MALLOC"


def retain_freed_memory() -> str:
    """Let glibc's ``malloc`` keep freed memory for reuse instead of handing it back to the OS.

    By default glibc serves every request above 32 MiB with a fresh ``mmap`` and unmaps it on
    ``free``, so each full-graph activation (``[N, 256]`` floats at ogbn-arxiv size is 173 MB)
    is page-faulted in again on every step; on this project's 2-core machine that made a ReLU of
    that size 5x slower (26 ms vs 5 ms) and dense GCN inference 1.8x slower. This turns ``mmap``
    serving and heap trimming off (``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD, max)``)
    for the rest of the process: the heap then stays at its peak size and later steps reuse it.
    The effect is process-wide, so the library never calls this on import; the ``gnnprune``
    command and the benchmarks do, unless ``$GNNPRUNE_SYSTEM_MALLOC`` is set to ``1``.

    Returns:
        what was done, for reports (e.g. ``"glibc malloc: freed memory retained"``).
    """
    if os.environ.get(OPT_OUT_VARIABLE, "") == "1":
        return f"system default malloc (${OPT_OUT_VARIABLE}=1)"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "system default malloc (not glibc)"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "system default malloc (mallopt unavailable)"
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_MAX, 0) != 1 or mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) != 1:
        return "system default malloc (mallopt refused)"
    return "glibc malloc: freed memory retained (mmap and trimming off)"
