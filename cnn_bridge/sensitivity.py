"""Per-layer pruned fractions from measured accuracy drops (Li et al., 2017): each layer is pruned
alone at a few fractions, then the least harmful cuts are taken first until the MAC target is met.
The ``sensitivity`` criterion that ranks channels within a layer is
:func:`cnn_bridge.criteria.sensitivity`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from .allocation import MacModel, keep_lowest_pruned
from .channel_masks import ChannelMasks, channel_engine
from .compact import PrunableLayer


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
                          reduction: float) -> tuple[dict[str, float], float]:
    """Per-layer fractions for a MAC target: the (layer, fraction) candidates are taken in order of
    increasing accuracy drop (ties: smaller fraction first, then model order), each raising its
    layer's fraction, until the MACs are at most ``(1 - reduction)`` dense. This is the tolerance
    rule of :func:`~cnn_bridge.criteria.sensitivity.fractions_within` at the smallest tolerance that
    meets the target, with ties broken so that equally harmless cuts are spread over layers. Drops
    are compared exactly: each is a difference of accuracies counted on the same images, so equal
    counts give equal floats.

    Returns:
        ``(fractions, tolerance)``, the tolerance being the drop of the last candidate taken.
    """
    target = (1.0 - reduction) * macs.macs()
    order = list(macs.channels)
    candidates = sorted(((d, f, order.index(name), name) for name, layer_drops in drops.items()
                         for f, d in zip(fractions, layer_drops)))
    chosen = {name: 0.0 for name in macs.channels}
    for drop, fraction, _, name in candidates:
        chosen[name] = max(chosen[name], fraction)
        if macs.macs(macs.kept_at(chosen)) <= target:
            return chosen, drop
    raise ValueError(f"sensitivity fractions up to {max(fractions)} cannot reach a {reduction:.0%} MAC reduction")
