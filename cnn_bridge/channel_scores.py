"""Channel scores of a model's prunable layers: post-activation features, one
:class:`~cnn_bridge.criteria.LayerView` per layer, the criterion's scores, and the central
criterion's compensation of removed channels.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .compact import PrunableLayer
from .criteria import Criterion, LayerView
from .criteria.central import compensate as central_compensate


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


def layer_view(model: nn.Module, layer: PrunableLayer, features: dict[str, Tensor] | None = None,
               learned: dict[str, Tensor] | None = None) -> LayerView:
    return LayerView(layer.conv, model.get_submodule(layer.conv),
                     model.get_submodule(layer.bn) if layer.bn else None,
                     tuple(model.get_submodule(name) for name in layer.consumers),
                     None if features is None else features.get(layer.conv),
                     None if learned is None else learned.get(layer.conv))


def score_layers(model: nn.Module, layers: Sequence[PrunableLayer], criterion: Criterion,
                 features: dict[str, Tensor] | None = None,
                 learned: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """``{conv name: scores [C]}``; low scores are pruned first. ``learned``: a training phase's
    per-channel importance (``cap``)."""
    return {layer.conv: criterion(layer_view(model, layer, features, learned)) for layer in layers}


def apply_central_compensation(model: nn.Module, layers: Sequence[PrunableLayer], keep: dict[str, Tensor],
                               features: dict[str, Tensor]) -> None:
    """Fold removed channels into their most similar kept ones (central filter), before masking."""
    for layer in layers:
        if not keep[layer.conv].all():
            central_compensate(layer_view(model, layer, features), keep[layer.conv])
