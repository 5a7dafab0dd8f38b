"""Importance scorers: pure callables ``scores = scorer(view)``.

A :class:`SiteView` shows a scorer what it may look at for one site: the entries' current
(effective) values, their gradient, optimizer state and mask. A scorer returns one score per
entry (same shape as ``view.mask``); higher means more important. The mask engine prunes
the lowest live scores and regrows the highest dead ones.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class SiteView:
    """What a scorer sees of one site.

    Attributes:
        mask: bool keep-mask, the site's entry shape.
        values: effective values of the entries (a weight, an edge's effective weight
            ``sigmoid(logit)``, a feature gate), same shape as ``mask``, or ``None``.
        grad: d loss / d value at the current point, same shape, or ``None``.
        optimizer_state: per-entry optimizer tensors (e.g. ``exp_avg``), same shape.
    """

    mask: Tensor
    values: Tensor | None = None
    grad: Tensor | None = None
    optimizer_state: dict[str, Tensor] = field(default_factory=dict)


Scorer = Callable[[SiteView], Tensor]


def _need(view: SiteView, attr: str, scorer: str) -> Tensor:
    value = getattr(view, attr)
    if value is None:
        raise ValueError(f"scorer {scorer!r} needs the site's {attr}")
    return value.detach()


def magnitude(view: SiteView) -> Tensor:
    """``|value|``: the classic magnitude criterion."""
    return _need(view, "values", "magnitude").abs()


def gradient_magnitude(view: SiteView) -> Tensor:
    """``|dL/dvalue|`` (RigL regrowth): how fast the loss changes if the entry moves."""
    return _need(view, "grad", "gradient_magnitude").abs()


def descent(view: SiteView) -> Tensor:
    """``-dL/dvalue``: first-order loss decrease from *raising* the value.

    The right regrowth signal for entries that can only move up from zero (an edge weight or a
    feature gate in ``[0, 1]``): ``L(v + dv) ~ L(v) + dL/dv * dv`` with ``dv > 0``.
    """
    return -_need(view, "grad", "descent")


def taylor(view: SiteView) -> Tensor:
    """``|value * dL/dvalue|``: first-order loss change from removing the entry."""
    return (_need(view, "values", "taylor") * _need(view, "grad", "taylor")).abs()


def momentum(view: SiteView) -> Tensor:
    """``|exp_avg|`` of Adam (or ``momentum_buffer`` of SGD): a smoothed gradient magnitude."""
    for key in ("exp_avg", "momentum_buffer"):
        if key in view.optimizer_state:
            return view.optimizer_state[key].detach().abs()
    raise ValueError("scorer 'momentum' needs an optimizer state with exp_avg or momentum_buffer")


def learned_gate(view: SiteView) -> Tensor:
    """The gate's effective value itself (e.g. ``sigmoid(logit)``); not its raw parameter."""
    return _need(view, "values", "learned_gate")


def random_scorer(generator: torch.Generator) -> Scorer:
    """Uniform random scores drawn from ``generator`` (a reproducible random baseline)."""

    def score(view: SiteView) -> Tensor:
        return torch.rand(view.mask.shape, generator=generator)

    return score


SCORERS: dict[str, Scorer] = {
    "magnitude": magnitude,
    "gradient": gradient_magnitude,
    "descent": descent,
    "taylor": taylor,
    "momentum": momentum,
    "gate": learned_gate,
}


def get_scorer(name: str) -> Scorer:
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; choose from {sorted(SCORERS)}") from None


def endpoint_rank(edges: Tensor, num_nodes: int, scores: Tensor, live: Tensor) -> Tensor:
    """Re-rank live edges by how weak each one is *at its two endpoints*.

    A live edge :math:`(u, v)` with score :math:`s` gets its percentile among the live edges of
    :math:`u` (:math:`p_u = j / \\deg(u)` for the :math:`j`-th weakest, so 1 for the strongest)
    and among those of :math:`v`; edges are then ordered by :math:`(p_u + p_v) / 2`, ties by
    the global score. Pruning the lowest ranks removes each node's weakest edges instead of the
    graph's globally weakest ones, which are concentrated where scores are small everywhere
    (far from the labelled nodes, gradients and learned edge weights barely move), and it
    spares a node's last edge longest: its percentile there is 1.

    Ties are exact, and the ranks are the same on every CPU: ``scores`` are compared exactly
    (ties by edge index), as :func:`~gnnprune.masks.lowest` does, since they are training
    results whose last bits already depend on the machine; the percentiles are quotients of
    whole numbers and their means one addition and a halving, each correctly rounded (IEEE 754),
    with no reduction whose order could vary. Two means equal as fractions but made of different
    ones (``(1 + 1/3) / 2`` and ``(1/2 + 5/6) / 2``) can differ in the last bit and are then
    ordered by it rather than by the global score, identically everywhere.

    Args:
        edges: ``[2, E]`` long, the undirected edges ``(u, v)``.
        num_nodes: number of nodes.
        scores: ``[E]`` importance of each edge (higher: more important).
        live: ``[E]`` bool, the edges being ranked; the others are ignored.

    Returns:
        ``[E]`` long: each live edge's rank (0: weakest), dead edges -1. Exact at any ``E``.
    """
    if edges.dim() != 2 or edges.size(0) != 2 or scores.shape != (edges.size(1),) or live.shape != scores.shape:
        raise ValueError(f"need edges [2, E] with scores and live of shape [E], got {tuple(edges.shape)}, "
                         f"{tuple(scores.shape)}, {tuple(live.shape)}")
    index = live.nonzero().view(-1)
    m = index.numel()
    ranks = torch.full((scores.numel(),), -1, dtype=torch.long)
    if m == 0:
        return ranks
    by_score = torch.sort(scores.detach()[index], stable=True).indices          # live edges, weakest first
    # [2E] index temporaries in int32 where they fit: E is 62M at ogbn-products size
    small = torch.int32 if max(num_nodes, 2 * m) < 2 ** 31 else torch.long
    ends = edges[:, index].to(small).reshape(-1)                               # incidence i: edge i % m's end i // m
    degree = torch.bincount(ends, minlength=num_nodes)
    incidences = torch.stack([by_score, by_score + m], dim=1).reshape(-1).to(small)  # weakest edge's ends first
    nodes, order = torch.sort(ends[incidences], stable=True)                  # grouped by node, weakest first
    del ends
    start = (torch.cumsum(degree, 0) - degree).to(small)
    place = (torch.arange(1, 2 * m + 1, dtype=small) - start[nodes]).double()  # 1-based place in its node's list
    place.div_(degree.double()[nodes])
    del nodes
    percentile = torch.empty(2 * m, dtype=torch.float64)
    percentile[incidences[order]] = place
    del order, incidences, place
    local = (percentile[:m] + percentile[m:]) / 2
    final = by_score[torch.sort(local[by_score], stable=True).indices]       # ties keep the global order
    ranks[index[final]] = torch.arange(m)
    return ranks
