"""How one overall weight sparsity is spread over the weight tensors of a model.

``UNIFORM`` gives every tensor the overall sparsity. ``ERK`` (Erdős–Rényi-Kernel, Evci et
al., "Rigging the Lottery", ICML 2020) gives tensor :math:`l` of shape
:math:`(n_1, \\dots, n_k)` a density proportional to

.. math::
    \\frac{\\sum_i n_i}{\\prod_i n_i},

scaled so that the live entries add up to the overall target; a tensor whose density would
exceed 1 stays dense and the others share the rest. Small tensors (a classifier with a few
hundred weights, a 64 x 64 layer) keep more of their entries than large input layers: at 98%
of a Cora GCN (1433 -> 256 -> 7), uniform sparsity leaves 36 of the 1,792 output weights,
ERK 993.

``GLOBAL`` ranks the entries of all tensors together and keeps the highest scores overall (one
threshold for the whole model: global magnitude pruning, as in UGS's reference code); where
each tensor ends depends on its scores, so :func:`kept_by_global_rank` sets the counts.
"""
from __future__ import annotations

import math
from enum import Enum
from typing import Mapping

import torch
from torch import Tensor

from .selection import highest, kept_count


class WeightDistribution(str, Enum):
    UNIFORM = "uniform"
    ERK = "erk"
    GLOBAL = "global"


def kept_per_tensor(shapes: Mapping[str, tuple[int, ...]], sparsity: float,
                    distribution: WeightDistribution = WeightDistribution.UNIFORM,
                    sizes: Mapping[str, int] | None = None) -> dict[str, int]:
    """Live entries per tensor at an overall ``sparsity``.

    Args:
        shapes: weight name -> tensor shape (sets the ERK density factor).
        sparsity: overall target in ``[0, 1]``.
        distribution: how to spread it.
        sizes: number of mask entries per tensor, when a mask entry covers more than one
            weight (structured pruning); default ``prod(shape)``.

    Returns:
        name -> live entries. Uniform: ``kept_count(size, sparsity)`` each. ERK: the counts add
        up to exactly ``kept_count(sum(sizes), sparsity)``, none above its size.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    sizes = {name: math.prod(shape) for name, shape in shapes.items()} if sizes is None else dict(sizes)
    distribution = WeightDistribution(distribution)
    if distribution is WeightDistribution.GLOBAL:
        raise ValueError("global ranking sets the counts from the scores: use kept_by_global_rank")
    if distribution is WeightDistribution.UNIFORM:
        return {name: kept_count(size, sparsity) for name, size in sizes.items()}
    total = kept_count(sum(sizes.values()), sparsity)
    densities = _erk_densities(shapes, sizes, total)
    return _integer_counts(densities, sizes, total)


def kept_by_global_rank(scores: Mapping[str, Tensor], sparsity: float) -> dict[str, int]:
    """Live entries per tensor when the entries of all tensors are ranked together.

    The ``kept_count(total, sparsity)`` highest scores over all tensors stay (ties: the
    earlier tensor in ``scores``' order, then the lower index); an entry scored ``-inf`` (dead,
    or forced out) is never kept. Pruning each tensor to its count by its own scores then
    removes the same entries as the global ranking, up to exact ties at the threshold.

    Args:
        scores: name -> score tensor of any shape (``-inf``: not a candidate).
        sparsity: overall target in ``[0, 1]`` over all entries of all tensors.

    Returns:
        name -> live entries; they add up to ``kept_count(total, sparsity)``, or to the number of
        scores above ``-inf`` if that is smaller.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    names = list(scores)
    flat = torch.cat([scores[name].detach().reshape(-1).double() for name in names]) if names else torch.zeros(0)
    candidates = flat > -float("inf")
    keep = min(kept_count(flat.numel(), sparsity), int(candidates.sum()))
    kept = torch.zeros(flat.numel(), dtype=torch.long)
    kept[highest(flat, candidates, keep)] = 1
    counts, start = {}, 0
    for name in names:
        size = scores[name].numel()
        counts[name] = int(kept[start:start + size].sum())
        start += size
    return counts


def _erk_densities(shapes, sizes, total: int) -> dict[str, float]:
    factor = {name: sum(shape) / math.prod(shape) for name, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        rest = [name for name in sizes if name not in dense]
        budget = total - sum(sizes[name] for name in dense)
        divisor = sum(factor[name] * sizes[name] for name in rest)
        if not rest or divisor == 0:
            return {name: 1.0 for name in sizes}
        scale = budget / divisor
        saturated = {name for name in rest if scale * factor[name] >= 1.0}
        if not saturated:
            return {**{name: 1.0 for name in dense}, **{name: scale * factor[name] for name in rest}}
        dense |= saturated


def _integer_counts(densities: Mapping[str, float], sizes: Mapping[str, int], total: int) -> dict[str, int]:
    """Round ``density * size`` down, then hand the remainder to the largest fractional parts.

    Fractional parts are compared exactly, ties by name: every number here is a Python float
    computed from integer shapes by the same sequence of IEEE 754 operations (no library
    reduction, no vector kernel), so the counts are the same on every CPU, and tensors of equal
    shape and size get bitwise equal parts.
    """
    exact = {name: min(densities[name], 1.0) * sizes[name] for name in sizes}
    counts = {name: min(int(math.floor(value)), sizes[name]) for name, value in exact.items()}
    remainder = total - sum(counts.values())
    order = sorted(sizes, key=lambda name: (-(exact[name] - counts[name]), name))
    while remainder > 0:
        progressed = False
        for name in order:
            if remainder == 0:
                break
            if counts[name] < sizes[name]:
                counts[name] += 1
                remainder -= 1
                progressed = True
        if not progressed:
            break
    return counts
