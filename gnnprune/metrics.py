"""Evaluation metrics behind one contract: ``score = evaluator(logits, y, mask)``."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Evaluator = Callable[[Tensor, Tensor, Tensor], float]


def accuracy(logits: Tensor, y: Tensor, mask: Tensor) -> float:
    """Fraction of ``mask`` nodes whose arg-max class equals ``y``."""
    if int(mask.sum()) == 0:
        return float("nan")
    return float((logits[mask].argmax(-1) == y[mask]).float().mean())


EVALUATORS: dict[str, Evaluator] = {"accuracy": accuracy}


def get_evaluator(metric: str) -> Evaluator:
    try:
        return EVALUATORS[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; choose from {sorted(EVALUATORS)}") from None


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(t.mean()), "std": float(t.std()) if t.numel() > 1 else 0.0, "n": int(t.numel())}
