"""Mask-aware GNNs: each takes ``(x, graph: MaskedGraph)`` and knows nothing of masks."""
from __future__ import annotations

from collections.abc import Callable

from .base import GraphModel, Linear
from .gcn import GCN, GCNConv

MODELS: dict[str, Callable[..., GraphModel]] = {
    "gcn": GCN,
}


def build_model(name: str, in_channels: int, out_channels: int, hidden_channels: int = 256,
                num_layers: int = 2, dropout: float = 0.5) -> GraphModel:
    """Build a registered model by name."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(sorted(MODELS))}")
    return MODELS[name](in_channels, hidden_channels, out_channels, num_layers=num_layers, dropout=dropout)


__all__ = ["GCN", "GCNConv", "GraphModel", "Linear", "MODELS", "build_model"]
