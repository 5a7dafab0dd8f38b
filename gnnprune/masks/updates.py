"""Compound mask updates built from the engine's exact prune and grow."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .engine import MaskEngine
from .selection import kept_count


@dataclass(frozen=True)
class SiteUpdate:
    """What one update did to a site (flat entry indices)."""

    pruned: Tensor
    swapped_out: Tensor
    grown: Tensor

    def as_dict(self) -> dict[str, int]:
        return {"pruned": int(self.pruned.numel()), "swapped_out": int(self.swapped_out.numel()),
                "grown": int(self.grown.numel())}


def prune_and_regrow(engine: MaskEngine, name: str, sparsity: float, regrow_fraction: float,
                     prune_scores: Tensor, grow_scores: Tensor, eligible: Tensor | None = None) -> SiteUpdate:
    """Prune a site to ``sparsity``, then swap a fraction of its live entries for dead ones.

    1. kill the lowest-scoring live entries until ``kept_count(numel, sparsity)`` remain;
    2. kill ``r = floor(regrow_fraction * kept)`` more (bounded by the eligible dead entries);
    3. revive the ``r`` highest-scoring eligible dead entries, excluding those killed in step 2.

    The site ends with exactly ``kept_count(numel, sparsity)`` live entries (or its current
    count if that is already lower: masks only shrink between updates).

    Args:
        prune_scores: per-entry importance of live entries (low = pruned first).
        grow_scores: per-entry regrowth score of dead entries (high = revived first).
        eligible: bool, entries that may be revived (default all).
    """
    site = engine.site(name)
    target = kept_count(site.numel, sparsity)
    pruned = engine.prune(name, max(site.live - target, 0), prune_scores)
    candidates = ~site.mask if eligible is None else (~site.mask & eligible.reshape(site.mask.shape).bool())
    r = min(int(regrow_fraction * site.live), int(candidates.sum()))
    swapped_out = engine.prune(name, r, prune_scores)
    grown = engine.grow(name, r, grow_scores, eligible=candidates)
    return SiteUpdate(pruned, swapped_out, grown)
