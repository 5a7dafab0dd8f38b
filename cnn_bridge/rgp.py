r"""Regular-graph pruning (RGP): one-shot block masks from low-ASPL random regular graphs.

Each prunable convolution gets ``n = min(groups, C_in, C_out)`` channel groups on each side.
A connected random ``k``-regular graph on ``n`` nodes, rewired for a short average shortest path
length (:func:`~cnn_bridge.graphs.optimise_aspl`), is its block mask: output group ``i`` reads
input group ``j`` iff ``i ~ j``. Every output group keeps ``k`` of ``n`` input groups, so the
layer keeps

.. math::
    \rho = k / n

of its weights (exactly, when the groups have equal sizes). The first convolution and every
``Linear`` layer (the classifier) stay dense.

The target density is one number for the whole model: ``--density rho`` or, equivalently,
``--degree K`` at ``--groups G`` (``rho = K / G``); a layer with fewer groups ``n < G`` gets
``k = round(rho * n)`` (kept in ``[1, n - 1]`` with ``k n`` even), and the density it reaches is
recorded.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from gnnprune.masks import MaskEngine, SiteKind

from .adapters import register_weight_site, weight_mask
from .graphs import DEFAULT_SWAPS, check_regular, optimise_aspl, random_regular_graph


@dataclass(frozen=True)
class RGPConfig:
    """How RGP masks are made.

    Attributes:
        groups: channel groups per layer ``G`` (a layer uses ``min(G, C_in, C_out)``).
        density: target fraction of kept weights in every pruned layer, in ``(0, 1)``.
        swaps: double-edge swap proposals per layer (0: the unoptimised random regular graph).
        seed: seeds every graph.
    """

    groups: int = 64
    density: float = 0.25
    swaps: int = DEFAULT_SWAPS
    seed: int = 0

    def __post_init__(self) -> None:
        if self.groups < 2:
            raise ValueError(f"groups must be >= 2, got {self.groups}")
        if not 0.0 < self.density < 1.0:
            raise ValueError(f"density must be in (0, 1), got {self.density}")
        if self.swaps < 0:
            raise ValueError(f"swaps must be >= 0, got {self.swaps}")

    @classmethod
    def from_degree(cls, groups: int, degree: int, **kwargs) -> "RGPConfig":
        """Degree ``K`` at ``G`` groups means density ``K / G``; ``K`` must be valid at ``G``."""
        check_regular(groups, degree)
        return cls(groups=groups, density=degree / groups, **kwargs)


@dataclass(frozen=True)
class LayerGraph:
    """Per-layer record: shapes, graph, density reached and the ASPL before/after rewiring."""

    layer: str
    c_out: int
    c_in: int
    n: int
    k: int
    density: float
    aspl_before: float
    aspl_after: float
    swaps_accepted: int
    seconds: float


def prunable_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every ungrouped ``Conv2d`` except the first one (``Linear`` layers are never included)."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
    return convs[1:]


def layer_degree(n: int, density: float) -> int:
    """``round(density * n)`` kept in ``[min(2, n-1), n - 1]`` and made even when ``n`` is odd."""
    low = min(2, n - 1)
    k = min(max(round(density * n), low), n - 1)
    if (k * n) % 2:
        k = k - 1 if k - 1 >= low else k + 1
    return k


def density_for_mac_reduction(model: nn.Module, input_shape: tuple[int, ...], reduction: float) -> float:
    r"""The density :math:`\rho` of the pruned layers that removes ``reduction`` of the model's MACs.

    With :math:`M_p` the MACs of :func:`prunable_convs` and :math:`M_f` those of the dense rest,
    :math:`\rho M_p + M_f = (1 - r)(M_p + M_f)`. ``ValueError`` if the dense rest alone exceeds the target.
    """
    from .counting import layer_counts

    prunable = {name for name, _ in prunable_convs(model)}
    counts = layer_counts(model, input_shape)
    pruned_macs = sum(c.macs for c in counts if c.name in prunable)
    fixed_macs = sum(c.macs for c in counts if c.name not in prunable)
    density = ((1.0 - reduction) * (pruned_macs + fixed_macs) - fixed_macs) / pruned_macs
    if not 0.0 < density < 1.0:
        raise ValueError(f"a MAC reduction of {reduction} needs density {density:.4f} in the pruned layers, "
                         "outside (0, 1)")
    return density


def check_groups(model: nn.Module, groups: int) -> None:
    """``ValueError`` if no prunable layer has ``groups`` channels on both sides."""
    widest = max((min(m.in_channels, m.out_channels) for _, m in prunable_convs(model)), default=0)
    if groups > widest:
        raise ValueError(f"groups {groups} > channels: the widest prunable layer has {widest} channels "
                         f"(min of in/out); use --groups <= {widest}")


def rgp_masks(model: nn.Module, engine: MaskEngine, config: RGPConfig) -> list[LayerGraph]:
    """Register one block site per prunable convolution with its RGP mask.

    Returns:
        one :class:`LayerGraph` per layer, in model order.
    """
    check_groups(model, config.groups)
    records = []
    for index, (name, conv) in enumerate(prunable_convs(model)):
        start = time.perf_counter()
        rng = np.random.default_rng([config.seed, index])
        n = min(config.groups, conv.in_channels, conv.out_channels)
        k = layer_degree(n, config.density)
        graph = random_regular_graph(n, k, rng)
        result = optimise_aspl(graph, rng, config.swaps)
        site = register_weight_site(engine, model, name, SiteKind.BLOCK, (n, n), torch.from_numpy(result.adjacency))
        seconds = time.perf_counter() - start
        density = float(weight_mask(site).float().mean())
        records.append(LayerGraph(name, conv.out_channels, conv.in_channels, n, k, density,
                                  result.aspl_before, result.aspl_after, result.accepted, seconds))
    return records


def random_element_masks(model: nn.Module, engine: MaskEngine, like: dict[str, int], seed: int) -> None:
    """Register one element site per layer keeping exactly ``like[layer]`` weights chosen at random.

    Args:
        like: ``{module name: kept weights}``, e.g. the counts of an RGP mask (same density).
    """
    generator = torch.Generator().manual_seed(seed)
    for name, kept in like.items():
        site = register_weight_site(engine, model, name, SiteKind.WEIGHT)
        engine.prune(site.name, site.numel - kept, torch.rand(site.numel, generator=generator))


def records_as_dicts(records: list[LayerGraph]) -> list[dict]:
    return [asdict(r) for r in records]
