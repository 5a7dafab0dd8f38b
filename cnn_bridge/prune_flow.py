r"""Structured filter pruning on the shared mask engine: score -> choose channels -> mask ->
fine-tune -> compact.

Each prunable convolution (:func:`cnn_bridge.compact.prunable_layers`) is a ``channel`` site of a
:class:`~gnnprune.masks.MaskEngine`. A dead channel has its filter, conv bias and batch-norm
:math:`\gamma, \beta` held at exactly zero, so its activation :math:`\mathrm{relu}(0)` is zero
and removing it (:func:`cnn_bridge.compact.compact`) leaves the outputs unchanged.

Budgets: a pruned fraction ``f`` of every prunable layer (``floor(f C)`` channels, at least one
kept), or a MAC reduction ``r``: the fraction shared by all layers is found by bisection so that
the masked MACs are at most ``(1 - r)`` times the dense MACs. The ``sensitivity`` criterion
instead gives each layer its own fraction from measured accuracy drops (a tolerance found by
bisection for the MAC target).
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnnprune.masks import MaskEngine, SiteKind

from .adapters import WeightMasks, register_weight_site
from .compact import PrunableLayer
from .counting import count_model, output_positions
from .criteria import Criterion, LayerView
from .criteria.central import compensate as central_compensate
from .criteria.sensitivity import fractions_within


class ChannelMasks(WeightMasks):
    """Output-channel masks of prunable convolutions, applied to the conv weight and bias *and*
    the batch norm's affine parameters, so a dead channel's activation is exactly zero.

    Args:
        engine: holds one ``channel`` site per layer (see :func:`channel_engine`).
        layers: the prunable layers the sites belong to.
    """

    def __init__(self, engine: MaskEngine, model: nn.Module, layers: Sequence[PrunableLayer]) -> None:
        self.layers = list(layers)
        super().__init__(engine, model)

    def refresh(self) -> None:
        super().refresh()
        self._bns = [(self.model.get_submodule(layer.bn), self.engine.mask(f"{layer.conv}.weight"))
                     for layer in self.layers if layer.bn is not None]

    @torch.no_grad()
    def apply(self) -> None:
        super().apply()
        for bn, live in self._bns:
            bn.weight.mul_(live)
            bn.bias.mul_(live)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        super().mask_gradients()
        for bn, live in self._bns:
            for p in (bn.weight, bn.bias):
                if p.grad is not None:
                    p.grad.mul_(live)

    def counting_masks(self) -> dict[str, Tensor]:
        """Weight masks for exact counts: dead output rows of each pruned conv and the matching
        input slices of its consumers (a ``Linear`` after a flattened map: all positions of the channel)."""
        masks = dict(self.weight_masks())
        for layer in self.layers:
            live = self.engine.mask(f"{layer.conv}.weight")
            for name in layer.consumers:
                w = self.model.get_submodule(name).weight
                cols = live.view(1, -1, 1).expand(w.shape[0], -1, w[0].numel() // (live.numel()))
                mask = cols.reshape(w.shape)
                masks[name] = masks[name] & mask if name in masks else mask
        return masks


    def dead_extras(self) -> int:
        """Parameters outside conv/linear weights that a dead channel also loses: its conv bias and
        batch-norm :math:`\\gamma, \\beta` (counted so the masked count equals the compact model's)."""
        extra = 0
        for layer in self.layers:
            dead = int((~self.engine.mask(f"{layer.conv}.weight")).sum())
            extra += dead * ((self.model.get_submodule(layer.conv).bias is not None) + 2 * (layer.bn is not None))
        return extra

    def count(self, input_shape: tuple[int, ...]) -> dict:
        """:func:`~cnn_bridge.counting.count_model` with exact structured counts (see :meth:`counting_masks`)."""
        counts = count_model(self.model, input_shape, self.counting_masks())
        params = counts["params"]
        params["pruned"] -= self.dead_extras()
        params["ratio"] = params["pruned"] / params["dense"]
        return counts


def channel_engine(model: nn.Module, layers: Sequence[PrunableLayer], keep: dict[str, Tensor] | None = None) -> MaskEngine:
    """A mask engine with one ``channel`` site per prunable layer (all live unless ``keep`` says)."""
    engine = MaskEngine()
    for layer in layers:
        register_weight_site(engine, model, layer.conv, SiteKind.CHANNEL,
                             mask=None if keep is None else keep[layer.conv].clone())
    return engine


@torch.no_grad()
def collect_features(model: nn.Module, layers: Sequence[PrunableLayer], batches: Iterable[Tensor]) -> dict[str, Tensor]:
    """Activations ``relu(bn(conv(x)))`` of every prunable layer on ``batches`` (eval mode).

    Returns:
        ``{conv name: [N, C, H, W]}``.
    """
    model.eval()
    store: dict[str, list[Tensor]] = {layer.conv: [] for layer in layers}
    handles = []
    for layer in layers:
        module = model.get_submodule(layer.bn or layer.conv)
        hook = lambda m, i, o, name=layer.conv: store[name].append(F.relu(o).detach().clone())  # noqa: E731
        handles.append(module.register_forward_hook(hook))
    try:
        for batch in batches:
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts) for name, parts in store.items()}


def layer_view(model: nn.Module, layer: PrunableLayer, features: dict[str, Tensor] | None = None) -> LayerView:
    return LayerView(layer.conv, model.get_submodule(layer.conv),
                     model.get_submodule(layer.bn) if layer.bn else None,
                     tuple(model.get_submodule(name) for name in layer.consumers),
                     None if features is None else features.get(layer.conv))


def score_layers(model: nn.Module, layers: Sequence[PrunableLayer], criterion: Criterion,
                 features: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """``{conv name: scores [C]}``; low scores are pruned first."""
    return {layer.conv: criterion(layer_view(model, layer, features)) for layer in layers}


def keep_lowest_pruned(scores: Tensor, fraction: float) -> Tensor:
    """Bool ``[C]`` keeping all but the ``floor(fraction C)`` lowest scores (at least one kept;
    ties go to the lower index)."""
    c = scores.numel()
    n = min(int(math.floor(fraction * c + 1e-9)), c - 1)
    keep = torch.ones(c, dtype=torch.bool)
    order = torch.sort(scores, stable=True).indices
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
            frac_out = kept.get(self.out_of.get(name), None)
            frac_in = kept.get(self.in_of.get(name), None)
            cost = w * self.positions[name]
            if frac_out is not None:
                cost = cost * frac_out // self.channels[self.out_of[name]]
            if frac_in is not None:
                cost = cost * frac_in // self.channels[self.in_of[name]]
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


def sensitivity_drops(model: nn.Module, layers: Sequence[PrunableLayer], scores: dict[str, Tensor],
                      accuracy: Callable[[nn.Module], float], fractions: Sequence[float],
                      progress: bool = False) -> tuple[float, dict[str, list[float]]]:
    """Accuracy drop from pruning each layer alone at each fraction (masks undone afterwards).

    Returns:
        ``(dense accuracy, {conv name: [drop per fraction]})``.
    """
    from tqdm.auto import tqdm

    base = accuracy(model)
    drops: dict[str, list[float]] = {}
    for layer in tqdm(layers, desc="sensitivity", disable=not progress, leave=False):
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        drops[layer.conv] = []
        for fraction in fractions:
            keep = {layer.conv: keep_lowest_pruned(scores[layer.conv], fraction)}
            ChannelMasks(channel_engine(model, [layer], keep), model, [layer]).apply()
            drops[layer.conv].append(base - accuracy(model))
            model.load_state_dict(saved)
    return base, drops


def sensitivity_fractions(macs: MacModel, drops: dict[str, list[float]], fractions: Sequence[float],
                          reduction: float, steps: int = 40) -> tuple[dict[str, float], float]:
    """Per-layer fractions at the smallest tolerance reaching ``reduction``; returns ``(fractions, tolerance)``."""
    target = (1.0 - reduction) * macs.macs()
    at = lambda tol: macs.macs(macs.kept_at(fractions_within(drops, fractions, tol)))  # noqa: E731
    high = max(max(d) for d in drops.values()) + 1e-9
    if at(high) > target:
        raise ValueError(f"sensitivity fractions up to {max(fractions)} cannot reach a {reduction:.0%} MAC reduction")
    low = min(min(d) for d in drops.values()) - 1e-9
    for _ in range(steps):
        mid = (low + high) / 2
        low, high = (low, mid) if at(mid) <= target else (mid, high)
    return fractions_within(drops, fractions, high), high


def apply_central_compensation(model: nn.Module, layers: Sequence[PrunableLayer], keep: dict[str, Tensor],
                               features: dict[str, Tensor]) -> None:
    """Fold removed channels into their most similar kept ones (central filter), before masking."""
    for layer in layers:
        if not keep[layer.conv].all():
            central_compensate(layer_view(model, layer, features), keep[layer.conv])


@torch.no_grad()
def latency(model: nn.Module, input_shape: tuple[int, ...], batch: int, repeats: int = 5) -> float:
    """Median wall seconds of one eval forward pass at ``batch`` (after one warm-up pass)."""
    model.eval()
    x = torch.randn(batch, *input_shape)
    model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def paired_latency(first: nn.Module, second: nn.Module, input_shape: tuple[int, ...], batch: int,
                   repeats: int = 5) -> tuple[float, float]:
    """Median latencies of two models measured alternately (so load changes hit both alike)."""
    first.eval(), second.eval()
    x = torch.randn(batch, *input_shape)
    first(x), second(x)
    a, b = [], []
    for _ in range(repeats):
        for model, times in ((first, a), (second, b)):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)
