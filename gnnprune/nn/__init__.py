"""Mask-aware GNNs: each takes ``(x, graph: MaskedGraph)`` and knows nothing of masks.

Models are registered by name with their usual hyperparameters; modules are imported
lazily, so an import error in one model never breaks the others.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from ..masks.distribution import WeightDistribution
from .base import Activation, GraphModel, Linear, UnitGroup, UnitRole, UnitSlice, WeightLayout
from .gcn import GCN, GCNConv


@dataclass(frozen=True)
class ModelSpec:
    """Where a model lives and the hyperparameters it is usually trained with.

    Attributes:
        target: ``"module:Class"`` of the :class:`GraphModel`.
        hidden_channels, num_layers, dropout: architecture defaults.
        lr, weight_decay, epochs: training defaults.
        options: extra keyword arguments of the constructor (e.g. ``K``, ``alpha``, ``heads``).
        weight_distribution: how the ``gnnprune`` command spreads a weight target over the
            weight tensors when ``--weight-distribution`` is not given (UGS: always uniform).
            ERK for GAT and APPNP: measured better at 0.8 and 0.98 weight sparsity on Cora and
            CiteSeer (``results/weight-distribution/``, ``results/model-zoo/``).
        edge_prior: CGP's pull of the edge logits towards their start
            (:attr:`~gnnprune.methods.CGPConfig.edge_prior`) when ``--edge-prior`` is not given.
            1e-4 for GCNII, whose 16 layers reuse every edge weight and rewire the graph around
            the labels without it; 0 elsewhere (APPNP lost 1.12 points with it). Measurements in
            ``results/model-zoo/``.
    """

    target: str
    hidden_channels: int = 256
    num_layers: int = 2
    dropout: float = 0.5
    lr: float = 0.01
    weight_decay: float = 5e-4
    epochs: int = 200
    options: dict = field(default_factory=dict)
    weight_distribution: WeightDistribution = WeightDistribution.UNIFORM
    edge_prior: float = 0.0

    def load(self) -> type[GraphModel]:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


MODELS: dict[str, ModelSpec] = {
    "gcn": ModelSpec("gnnprune.nn.gcn:GCN"),
    "gat": ModelSpec("gnnprune.nn.gat:GAT", hidden_channels=8, dropout=0.6, lr=0.02, weight_decay=5e-4,
                     options={"heads": 8}, weight_distribution=WeightDistribution.ERK),
    "sage": ModelSpec("gnnprune.nn.sage:GraphSAGE", hidden_channels=256, dropout=0.5, lr=0.01, weight_decay=5e-4,
                      options={"edge_dropout": 0.5}),
    "appnp": ModelSpec("gnnprune.nn.appnp:APPNP", hidden_channels=64, dropout=0.7, lr=0.05, weight_decay=5e-4,
                       epochs=300, options={"K": 10, "alpha": 0.1, "edge_dropout": 0.3},
                       weight_distribution=WeightDistribution.ERK),
    "sgc": ModelSpec("gnnprune.nn.sgc:SGC", hidden_channels=64, num_layers=1, dropout=0.5, lr=0.2,
                     weight_decay=5e-5, epochs=200, options={"K": 2}),
    "gcn2": ModelSpec("gnnprune.nn.gcn2:GCNII", hidden_channels=64, num_layers=16, dropout=0.6, lr=0.01,
                      weight_decay=5e-4, epochs=400, options={"alpha": 0.1, "theta": 0.5, "conv_weight_decay": 0.01},
                      edge_prior=1e-4),
    "resgcn": ModelSpec("gnnprune.nn.resgcn:ResGCN", hidden_channels=64, num_layers=8, dropout=0.5, lr=0.01,
                        weight_decay=1e-2, epochs=200, options={"norm": "layer"}),
}


def model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(sorted(MODELS))}")
    return MODELS[name]


def build_model(name: str, in_channels: int, out_channels: int, hidden_channels: int | None = None,
                num_layers: int | None = None, dropout: float | None = None, **options) -> GraphModel:
    """Build a registered model; unspecified hyperparameters take the model's defaults."""
    spec = model_spec(name)
    return spec.load()(
        in_channels,
        spec.hidden_channels if hidden_channels is None else hidden_channels,
        out_channels,
        num_layers=spec.num_layers if num_layers is None else num_layers,
        dropout=spec.dropout if dropout is None else dropout,
        **{**spec.options, **options},
    )


__all__ = ["Activation", "GCN", "GCNConv", "GraphModel", "Linear", "MODELS", "ModelSpec", "UnitGroup", "UnitRole",
           "UnitSlice", "WeightLayout", "build_model", "model_spec"]
