"""How busy the machine was when a measurement started (wall times depend on it)."""
from __future__ import annotations

import math
import os


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
