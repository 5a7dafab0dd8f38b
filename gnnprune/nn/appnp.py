"""APPNP: predict, then propagate with personalised PageRank (Gasteiger et al., ICLR 2019), over kept edges."""
from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from ..graph import MaskedGraph
from ..macs import aggregation_macs, gcn_operator_entries, transform_macs
from ..sparse import SparseMatrix, dropout
from .base import Activation, GraphModel, Linear, UnitGroup, UnitRole, UnitSlice


class PPRPropagation(nn.Module):
    """``K`` power-iteration steps of personalised PageRank, starting from the predictions.

    .. math::
        H^{0} = Z, \\qquad
        H^{k+1} = (1 - \\alpha)\\, \\hat{A} H^{k} + \\alpha H^{0}, \\qquad
        \\text{output } H^{K}

    :math:`\\hat{A}` is the normalised adjacency of the kept edges with self-loops
    (:meth:`MaskedGraph.gcn_operator`), recomputed from the current edge weights each step, so
    a dead edge is absent and learned edge weights get gradients through every step. With
    ``edge_dropout > 0``, each training step drops the stored values of :math:`\\hat{A}`
    (self-loops included) independently per power-iteration step and rescales the rest by
    :math:`1 / (1 - p)`, as in the paper and in PyG's ``APPNP``. There are no parameters.

    Args:
        K: number of propagation steps (>= 0; 0 returns ``Z``).
        alpha: teleport (restart) probability in ``[0, 1]``.
        edge_dropout: dropout probability on the operator's values during training.

    Shapes:
        x: ``[N, d]`` dense; output ``[N, d]``.
    """

    def __init__(self, K: int = 10, alpha: float = 0.1, edge_dropout: float = 0.0) -> None:
        super().__init__()
        if K < 0:
            raise ValueError(f"K must be >= 0, got {K}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if not 0.0 <= edge_dropout < 1.0:
            raise ValueError(f"edge_dropout must be in [0, 1), got {edge_dropout}")
        self.K = int(K)
        self.alpha = float(alpha)
        self.edge_dropout = float(edge_dropout)

    def reset_parameters(self) -> None:
        """No parameters."""

    def forward(self, x: Tensor, graph: MaskedGraph) -> Tensor:
        op = graph.gcn_operator()
        h = x
        for _ in range(self.K):
            step_op = dropout(op, self.edge_dropout, self.training)
            h = step_op.addmm(x, h, beta=self.alpha, alpha=1.0 - self.alpha)  # one pass: no separate scale and sum
        return h

    def extra_repr(self) -> str:
        return f"K={self.K}, alpha={self.alpha}, edge_dropout={self.edge_dropout}"


class APPNP(GraphModel):
    """An MLP on each node's features, then :class:`PPRPropagation` of its logits.

    .. math::
        Z = \\mathrm{MLP}(X), \\qquad \\text{logits} = \\mathrm{PPR}_{K, \\alpha}(Z)

    The MLP is ``num_layers`` :class:`Linear` layers with ReLU between them and dropout before
    each (on the stored values of sparse input features). Only the first layer reads input
    features; propagation has no weights, so its cost is ``K`` sparse products of width
    ``out_channels``.

    Args:
        in_channels: number of input features.
        hidden_channels: width of the hidden layers.
        out_channels: number of classes.
        num_layers: number of linear layers (>= 1).
        dropout: dropout probability before every linear layer.
        K: propagation steps.
        alpha: teleport probability.
        edge_dropout: dropout on the propagation operator's values (training only).
    """

    input_weight_names = ("lins.0.weight",)

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 num_layers: int = 2, dropout: float = 0.5, K: int = 10, alpha: float = 0.1,
                 edge_dropout: float = 0.0) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        widths = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        self.lins = nn.ModuleList(Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.prop = PPRPropagation(K, alpha, edge_dropout)
        self.dropout = dropout

    def forward(self, x: Tensor | SparseMatrix, graph: MaskedGraph) -> Tensor:
        for i, lin in enumerate(self.lins):
            x = lin(dropout(x, self.dropout, self.training))
            if i < len(self.lins) - 1:
                x = F.relu(x, inplace=True)  # no backward needs the linear layer's output
        return self.prop(x, graph)

    def hidden_units(self) -> dict[str, UnitGroup]:
        """The MLP's hidden units (outputs of every linear layer but the last): the layer's weight
        column and bias entry, and the next layer's weight row; ReLU. Propagation runs at class width."""
        return {f"lins.{i}": UnitGroup(lin.weight.size(1), (
                    UnitSlice(f"lins.{i}.weight", (1,), UnitRole.PRODUCER),
                    UnitSlice(f"lins.{i}.bias", (0,), UnitRole.BIAS),
                    UnitSlice(f"lins.{i + 1}.weight", (0,), UnitRole.CONSUMER)), Activation.RELU)
                for i, lin in enumerate(self.lins[:-1])}

    def macs(self, num_nodes: int, kept_edges: int, kept_weights: dict[str, int],
             live_units: Mapping[str, Tensor] | None = None) -> list[dict]:
        """Per-layer MACs: kept weights x nodes for each linear layer (no aggregation), then
        one row per propagation step: operator entries x output width (no transform). Pruned
        hidden units show in the kept weights alone."""
        rows = [{"layer": f"lins.{i}", "transform": transform_macs(kept_weights[f"lins.{i}.weight"], num_nodes),
                 "aggregation": 0} for i in range(len(self.lins))]
        entries = gcn_operator_entries(kept_edges, num_nodes)
        width = self.lins[-1].weight.size(1)
        rows += [{"layer": f"prop.{k}", "transform": 0, "aggregation": aggregation_macs(entries, width)}
                 for k in range(self.prop.K)]
        return rows
