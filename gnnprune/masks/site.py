"""A prunable site: a named set of entries with a boolean keep-mask."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch
from torch import Tensor


class SiteKind(str, enum.Enum):
    """What the entries of a site are."""

    WEIGHT = "weight"    # elements (or rows) of a weight tensor
    UNIT = "unit"        # hidden units of a model: a slice of every parameter that produces or reads one
    EDGE = "edge"        # undirected edges of a graph; both directions share one entry
    FEATURE = "feature"  # input feature columns
    CHANNEL = "channel"  # output channels of a convolution
    BLOCK = "block"      # channel-group x channel-group blocks of a convolution


@dataclass
class Site:
    """A named prunable thing.

    Args:
        name: unique name in its engine (e.g. ``"layers.0.weight"``, ``"edges"``).
        kind: what an entry is.
        mask: boolean keep-mask over the entries; ``True`` = live. Its shape is the
            entry shape (the weight's shape for element sites, ``[rows]`` for row sites,
            ``[num_edges]`` for edge sites ...).
        meta: free-form, JSON-serialisable description (e.g. the tensor the entries map onto).
    """

    name: str
    kind: SiteKind
    mask: Tensor
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mask.dtype != torch.bool:
            raise TypeError(f"site {self.name!r}: mask must be bool, got {self.mask.dtype}")
        self.kind = SiteKind(self.kind)

    @property
    def numel(self) -> int:
        return self.mask.numel()

    @property
    def live(self) -> int:
        return int(self.mask.sum())

    @property
    def density(self) -> float:
        return self.live / self.numel if self.numel else 1.0

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density
