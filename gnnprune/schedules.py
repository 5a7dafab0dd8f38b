"""Schedules: pure functions of the training step (epoch)."""
from __future__ import annotations

import math
from dataclasses import dataclass


def _check_window(start: int, end: int) -> None:
    if start < 0 or end < start:
        raise ValueError(f"schedule window must satisfy 0 <= start <= end, got start={start}, end={end}")


@dataclass(frozen=True)
class Constant:
    """``value`` at every step."""

    value: float

    def __call__(self, step: int) -> float:
        return self.value


@dataclass(frozen=True)
class CubicSparsity:
    """Gradual pruning schedule of Zhu & Gupta (2017).

    .. math::
        s(t) = s_f + (s_i - s_f)\\left(1 - \\frac{t - t_0}{t_1 - t_0}\\right)^3

    for ``t0 <= t <= t1``; ``s_i`` before ``t0`` and ``s_f`` after ``t1``. Monotone, fast early
    and gentle near the end, when fewer entries are left to lose.
    """

    initial: float
    final: float
    start: int
    end: int

    def __post_init__(self) -> None:
        _check_window(self.start, self.end)
        for value in (self.initial, self.final):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"sparsity must be in [0, 1), got {value}")

    def __call__(self, step: int) -> float:
        if step <= self.start:
            return self.initial if step < self.start or self.end > self.start else self.final
        if step >= self.end:
            return self.final
        progress = (step - self.start) / (self.end - self.start)
        return self.final + (self.initial - self.final) * (1.0 - progress) ** 3


@dataclass(frozen=True)
class CosineDecay:
    """``value/2 * (1 + cos(pi * (t - t0) / (t1 - t0)))`` inside the window, 0 after it.

    Used for the regrowth fraction: large swaps early, none at the end so the final
    sparsity is reached exactly.
    """

    initial: float
    start: int
    end: int

    def __post_init__(self) -> None:
        _check_window(self.start, self.end)
        if not 0.0 <= self.initial <= 1.0:
            raise ValueError(f"regrowth fraction must be in [0, 1], got {self.initial}")

    def __call__(self, step: int) -> float:
        if step < self.start:
            return self.initial
        if step >= self.end:
            return 0.0
        progress = (step - self.start) / (self.end - self.start)
        return 0.5 * self.initial * (1.0 + math.cos(math.pi * progress))


def update_steps(start: int, end: int, every: int) -> list[int]:
    """The steps ``start, start + every, ...`` up to and always including ``end``."""
    _check_window(start, end)
    if every < 1:
        raise ValueError(f"update interval must be >= 1, got {every}")
    steps = list(range(start, end, every))
    return steps + [end]
