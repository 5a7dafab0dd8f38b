"""Pure selection rules: which entries to kill or revive, deterministically."""
from __future__ import annotations

import torch
from torch import Tensor


def kept_count(numel: int, sparsity: float) -> int:
    """Number of live entries at ``sparsity``: ``numel - round(sparsity * numel)``."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    return numel - int(round(sparsity * numel))


def lowest(scores: Tensor, candidates: Tensor, n: int) -> Tensor:
    """Flat indices of the ``n`` candidates with the lowest scores.

    Ties are broken by the lower flat index, so the result is deterministic.

    Args:
        scores: any shape; flattened.
        candidates: bool, same number of elements; only these may be chosen.
        n: how many to choose; must not exceed the number of candidates.
    """
    return _select(scores.reshape(-1), candidates.reshape(-1), n, descending=False)


def highest(scores: Tensor, candidates: Tensor, n: int) -> Tensor:
    """Flat indices of the ``n`` candidates with the highest scores (ties: lower index)."""
    return _select(scores.reshape(-1), candidates.reshape(-1), n, descending=True)


def _select(scores: Tensor, candidates: Tensor, n: int, descending: bool) -> Tensor:
    if scores.numel() != candidates.numel():
        raise ValueError(f"{scores.numel()} scores for {candidates.numel()} entries")
    if n < 0:
        raise ValueError(f"cannot select a negative number of entries ({n})")
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
    order = torch.sort(-values if descending else values, stable=True).indices
    return index[order[:n]]
