"""The mask engine: one registry for every mask of a run."""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from .selection import highest, lowest
from .site import Site, SiteKind


class MaskEngine:
    """Holds the keep-masks of named sites and changes them by exact counts.

    The engine never touches a model or an optimizer: callers read masks from it and apply
    them. ``prune`` and ``grow`` are exact (they change exactly ``n`` entries or raise) and
    deterministic (ties broken by index; exact ties unless a ``tolerance`` is given, see
    :func:`~gnnprune.masks.selection.lowest`).

    Example::

        engine = MaskEngine()
        engine.add("edges", SiteKind.EDGE, num_edges)
        engine.prune("edges", 100, scores)   # kill the 100 live edges with the lowest scores
    """

    def __init__(self) -> None:
        self._sites: dict[str, Site] = {}

    # registry -----------------------------------------------------------------------------
    def add(self, name: str, kind: SiteKind | str, shape: int | tuple[int, ...] | torch.Size,
            mask: Tensor | None = None, **meta) -> Site:
        """Register a site with all entries live (or with the given ``mask``)."""
        if name in self._sites:
            raise KeyError(f"site {name!r} is already registered")
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if mask is None:
            mask = torch.ones(shape, dtype=torch.bool)
        elif tuple(mask.shape) != shape:
            raise ValueError(f"site {name!r}: mask shape {tuple(mask.shape)} != {shape}")
        site = Site(name, SiteKind(kind), mask.clone().bool(), dict(meta))
        self._sites[name] = site
        return site

    def __contains__(self, name: str) -> bool:
        return name in self._sites

    def __iter__(self) -> Iterator[Site]:
        return iter(self._sites.values())

    def __len__(self) -> int:
        return len(self._sites)

    def site(self, name: str) -> Site:
        try:
            return self._sites[name]
        except KeyError:
            raise KeyError(f"unknown site {name!r}; known: {sorted(self._sites)}") from None

    def sites(self, kind: SiteKind | str | None = None) -> list[Site]:
        return [s for s in self._sites.values() if kind is None or s.kind == SiteKind(kind)]

    def mask(self, name: str) -> Tensor:
        return self.site(name).mask

    # measures -----------------------------------------------------------------------------
    def density(self, name: str | None = None, kind: SiteKind | str | None = None) -> float:
        """Fraction of live entries of one site, or of all sites (of one kind) together."""
        sites = [self.site(name)] if name is not None else self.sites(kind)
        total = sum(s.numel for s in sites)
        return sum(s.live for s in sites) / total if total else 1.0

    def sparsity(self, name: str | None = None, kind: SiteKind | str | None = None) -> float:
        return 1.0 - self.density(name, kind)

    # changes ------------------------------------------------------------------------------
    def prune(self, name: str, n: int, scores: Tensor, tolerance: float = 0.0) -> Tensor:
        """Kill exactly ``n`` live entries with the lowest scores; returns their flat indices.

        Args:
            tolerance: relative tolerance under which scores are tied (see :func:`lowest`).
        """
        site = self.site(name)
        self._check_scores(site, scores)
        index = lowest(scores, site.mask, n, tolerance)
        site.mask.view(-1)[index] = False
        return index

    def grow(self, name: str, n: int, scores: Tensor, eligible: Tensor | None = None,
             tolerance: float = 0.0) -> Tensor:
        """Revive exactly ``n`` dead entries with the highest scores; returns their flat indices.

        Args:
            eligible: optional bool mask; only dead entries that are also eligible may revive.
            tolerance: relative tolerance under which scores are tied (see :func:`highest`).
        """
        site = self.site(name)
        self._check_scores(site, scores)
        dead = ~site.mask
        if eligible is not None:
            dead = dead & eligible.reshape(site.mask.shape).bool()
        index = highest(scores, dead, n, tolerance)
        site.mask.view(-1)[index] = True
        return index

    def set_mask(self, name: str, mask: Tensor) -> None:
        site = self.site(name)
        if mask.shape != site.mask.shape:
            raise ValueError(f"site {name!r}: mask shape {tuple(mask.shape)} != {tuple(site.mask.shape)}")
        site.mask = mask.clone().bool()

    @staticmethod
    def _check_scores(site: Site, scores: Tensor) -> None:
        if scores.numel() != site.numel:
            raise ValueError(f"site {site.name!r} has {site.numel} entries, got {scores.numel()} scores")

    # persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Plain tensors and strings only, loadable with ``torch.load(weights_only=True)``."""
        return {
            name: {"kind": s.kind.value, "mask": s.mask.clone(), "meta": dict(s.meta)}
            for name, s in self._sites.items()
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore masks; sites must match by name, kind and shape."""
        missing = set(self._sites) - set(state)
        unexpected = set(state) - set(self._sites)
        if missing or unexpected:
            raise KeyError(f"mask state mismatch: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        for name, entry in state.items():
            site = self._sites[name]
            if SiteKind(entry["kind"]) != site.kind:
                raise ValueError(f"site {name!r}: kind {entry['kind']} != {site.kind.value}")
            self.set_mask(name, entry["mask"])

    @classmethod
    def from_state_dict(cls, state: dict) -> "MaskEngine":
        engine = cls()
        for name, entry in state.items():
            engine.add(name, entry["kind"], tuple(entry["mask"].shape), entry["mask"], **entry.get("meta", {}))
        return engine

    def summary(self) -> dict[str, dict]:
        return {s.name: {"kind": s.kind.value, "entries": s.numel, "live": s.live,
                         "sparsity": s.sparsity} for s in self._sites.values()}
