r"""Pure selection rules: which entries to kill or revive, deterministically.

Ties. Scores are ranked ascending (or descending) with equal scores in index order. With an
absolute tolerance :math:`\tau \ge 0`, scores are *tied* when a chain of scores, each within
:math:`\tau` of the next, joins them: after sorting, a new tie group starts wherever the gap to
the previous score exceeds :math:`\tau`. Groups are ordered by their scores and the members of
one group by index, so two scores that differ only by rounding (computed along different
summation orders, by different BLAS kernels on different CPUs) land in the same place on every
machine. :math:`\tau = 0` is exact comparison. Infinite scores are tied only with equal ones.
"""
from __future__ import annotations

import torch
from torch import Tensor


def kept_count(numel: int, sparsity: float) -> int:
    """Number of live entries at ``sparsity``: ``numel - round(sparsity * numel)``."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    return numel - int(round(sparsity * numel))


def tie_groups(values: Tensor, atol: float = 0.0) -> Tensor:
    """Tie group of each score: ``[n]`` long, increasing with the score, equal within a group.

    Args:
        values: ``[n]`` scores without NaN (float, or long for exact ranks).
        atol: absolute tolerance :math:`\\tau` (see the module docstring).
    """
    if atol < 0:
        raise ValueError(f"tolerance must be >= 0, got {atol}")
    sorted_values, order = torch.sort(values, stable=True)
    gaps = sorted_values[1:] - sorted_values[:-1]
    finite = torch.isfinite(sorted_values)
    # a gap starts a group when it exceeds the tolerance; an infinite neighbour only when unequal
    new = torch.where(finite[1:] & finite[:-1], gaps > atol, sorted_values[1:] != sorted_values[:-1])
    groups = torch.empty_like(order)
    groups[order] = torch.cat([new.new_zeros(1), new]).long().cumsum(0)
    return groups


def tie_order(values: Tensor, atol: float = 0.0, descending: bool = False) -> Tensor:
    """Permutation ``[n]`` ranking ``values`` by tie group, then by index (both directions).

    ``atol=0`` gives the stable sort of ``values``: exact comparison, equal scores by index.
    """
    groups = tie_groups(values, atol)
    return torch.sort(-groups if descending else groups, stable=True).indices


def tolerant_argmax(values: Tensor, atol: float = 0.0) -> int:
    """The lowest index in the top tie group of ``values`` (1-D, not all ``-inf``).

    Equal to ``int(tie_order(values, atol, descending=True)[0])`` in :math:`O(n)` passes: the top
    group's floor is lowered while some score lies within ``atol`` below it.
    """
    floor = values.max()
    if atol > 0 and torch.isfinite(floor):
        while True:
            reach = values[values >= floor - atol].min()
            if reach == floor:
                break
            floor = reach
    return int((values >= floor).nonzero()[0])


def relative_tolerance(values: Tensor, rtol: float) -> float:
    """``rtol`` times the largest finite ``|value|`` (0 when there is none)."""
    finite = values[torch.isfinite(values)]
    return float(rtol * finite.abs().max()) if finite.numel() else 0.0


def lowest(scores: Tensor, candidates: Tensor, n: int, tolerance: float = 0.0) -> Tensor:
    """Flat indices of the ``n`` candidates with the lowest scores.

    Ties are broken by the lower flat index, so the result is deterministic. By default ties are
    exact: the scores here are float32 results of a training run, whose last bits already
    differ between CPUs, and the ties that matter (weights regrown at exactly zero, zero
    gradients, gates still at their initial value) are exact on every CPU. A default tolerance
    would instead reorder every pair of entries that happen to lie close to the cut.

    Args:
        scores: any shape; flattened.
        candidates: bool, same number of elements; only these may be chosen.
        n: how many to choose; must not exceed the number of candidates.
        tolerance: relative tolerance; candidates' scores within ``tolerance * max |score|``
            (the largest finite one among the candidates) are tied and taken in index order
            (see the module docstring for the chaining rule). ``0``: exact comparison.
    """
    return _select(scores.reshape(-1), candidates.reshape(-1), n, descending=False, tolerance=tolerance)


def highest(scores: Tensor, candidates: Tensor, n: int, tolerance: float = 0.0) -> Tensor:
    """Flat indices of the ``n`` candidates with the highest scores (ties: lower index; see :func:`lowest`)."""
    return _select(scores.reshape(-1), candidates.reshape(-1), n, descending=True, tolerance=tolerance)


def _select(scores: Tensor, candidates: Tensor, n: int, descending: bool, tolerance: float) -> Tensor:
    if scores.numel() != candidates.numel():
        raise ValueError(f"{scores.numel()} scores for {candidates.numel()} entries")
    if n < 0:
        raise ValueError(f"cannot select a negative number of entries ({n})")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    index = candidates.nonzero().view(-1)
    if n > index.numel():
        raise ValueError(f"asked for {n} entries but only {index.numel()} are candidates")
    if n == 0:
        return index[:0]
    values = scores[index].detach()
    if not (values.is_floating_point() or values.dtype == torch.long):
        values = values.float()  # float64 and long keep their exactness (ranks above 2**24)
    if torch.isnan(values).any():
        raise ValueError("scores contain NaN")
    if tolerance == 0:
        order = torch.sort(-values if descending else values, stable=True).indices
    else:
        order = tie_order(values, relative_tolerance(values.double(), tolerance), descending)
    return index[order[:n]]
