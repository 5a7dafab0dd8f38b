"""Which output channels to keep under a budget.

Budgets: a pruned fraction ``f`` of every prunable layer (``floor(f C)`` channels, at least one
kept), or a MAC reduction ``r``: the fraction shared by all layers is found by bisection so that
the masked MACs (:class:`MacModel`, exact at batch 1) are at most ``(1 - r)`` times the dense MACs.
Per-layer fractions from accuracy drops: :mod:`cnn_bridge.sensitivity`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gnnprune.masks import relative_tolerance, tie_order

from .compact import PrunableLayer
from .counting import output_positions
from .criteria import TIE_RTOL


def keep_lowest_pruned(scores: Tensor, fraction: float) -> Tensor:
    """Bool ``[C]`` keeping all but the ``floor(fraction C)`` lowest scores (at least one kept).

    Scores within :data:`~cnn_bridge.criteria.TIE_RTOL` times the largest ``|score|`` are tied
    (chained, see :mod:`gnnprune.masks.selection`) and go to the lower index first, so equal
    scores computed along different paths are pruned in the same order on every CPU.
    """
    c = scores.numel()
    n = min(int(math.floor(fraction * c + 1e-9)), c - 1)
    keep = torch.ones(c, dtype=torch.bool)
    values = scores.detach().double()
    order = tie_order(values, relative_tolerance(values, TIE_RTOL))
    keep[order[:n]] = False
    return keep


def keep_for_fractions(scores: dict[str, Tensor], fractions: dict[str, float]) -> dict[str, Tensor]:
    return {name: keep_lowest_pruned(s, fractions[name]) for name, s in scores.items()}


@dataclass(frozen=True)
class MacModel:
    """Exact MACs at batch 1 as a function of the kept channels of the prunable layers.

    A conv/linear layer costs ``(in_kept * out_kept / in * out) * weights * positions``.
    """

    layers: tuple[PrunableLayer, ...]
    weights: dict[str, int]
    positions: dict[str, int]
    out_of: dict[str, str]       # module -> prunable conv whose channels it outputs
    in_of: dict[str, str]        # module -> prunable conv whose channels it consumes
    channels: dict[str, int]

    @classmethod
    def of(cls, model: nn.Module, layers: Sequence[PrunableLayer], input_shape: tuple[int, ...]) -> "MacModel":
        positions = output_positions(model, input_shape)
        weights = {name: model.get_submodule(name).weight.numel() for name in positions}
        return cls(tuple(layers), weights, positions, {layer.conv: layer.conv for layer in layers},
                   {c: layer.conv for layer in layers for c in layer.consumers},
                   {layer.conv: model.get_submodule(layer.conv).out_channels for layer in layers})

    def macs(self, kept: dict[str, int] | None = None) -> int:
        kept = kept or {}
        total = 0
        for name, w in self.weights.items():
            kept_out = kept.get(self.out_of.get(name), None)
            kept_in = kept.get(self.in_of.get(name), None)
            cost = w * self.positions[name]
            if kept_out is not None:
                cost = cost * kept_out // self.channels[self.out_of[name]]
            if kept_in is not None:
                cost = cost * kept_in // self.channels[self.in_of[name]]
            total += cost
        return total

    def kept_at(self, fractions: dict[str, float]) -> dict[str, int]:
        return {name: c - min(int(math.floor(fractions[name] * c + 1e-9)), c - 1) for name, c in self.channels.items()}


def uniform_fraction_for(macs: MacModel, reduction: float, steps: int = 40) -> float:
    """Smallest fraction ``f`` (to bisection precision) with MACs at ``f`` everywhere <= ``(1 - r)`` dense.

    Raises:
        ValueError: if even keeping one channel per layer does not reach the target.
    """
    target = (1.0 - reduction) * macs.macs()
    at = lambda f: macs.macs(macs.kept_at({name: f for name in macs.channels}))  # noqa: E731
    if at(1.0) > target:
        raise ValueError(f"a {reduction:.0%} MAC reduction is out of reach pruning only these layers "
                         f"(at most {1 - at(1.0) / macs.macs():.1%})")
    low, high = 0.0, 1.0
    for _ in range(steps):
        mid = (low + high) / 2
        low, high = (low, mid) if at(mid) <= target else (mid, high)
    return high
