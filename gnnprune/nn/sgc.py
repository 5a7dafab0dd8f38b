"""Simple graph convolution (Wu et al., ICML 2019) over kept edges."""
from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from ..graph import MaskedGraph
from ..macs import aggregation_macs, gcn_operator_entries, transform_macs
from ..sparse import SparseMatrix, dropout
from .base import GraphModel, Linear


class SGC(GraphModel):
    """Logistic regression on ``K``-hop propagated features: :math:`\\hat{A}^K X W + b`.

    .. math::
        \\text{logits} = \\hat{A}^{K} (X W) + b

    :math:`\\hat{A}` is the normalised adjacency of the kept edges with self-loops
    (:meth:`MaskedGraph.gcn_operator`). The original SGC precomputes :math:`\\hat{A}^K X` once;
    here the edges change during co-pruning, so the product is evaluated right to left every
    forward pass. That is exact (matrix products associate; the bias is added after
    propagation, as in ``SGConv``), always follows the current edge mask and edge weights,
    and costs ``K`` sparse products of width ``out_channels`` only.

    Args:
        in_channels: number of input features.
        hidden_channels: unused (SGC has no hidden layer); accepted for the common signature.
        out_channels: number of classes.
        num_layers: unused; accepted for the common signature.
        dropout: dropout probability on the input features (0 in the original SGC).
        K: number of propagation steps (>= 0).

    Shapes:
        x: ``[N, in_channels]`` (dense or sparse); output ``[N, out_channels]``.
    """

    input_weight_names = ("lin.weight",)

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 num_layers: int = 1, dropout: float = 0.0, K: int = 2) -> None:
        super().__init__()
        if K < 0:
            raise ValueError(f"K must be >= 0, got {K}")
        self.lin = Linear(in_channels, out_channels)
        self.K = int(K)
        self.dropout = dropout

    def forward(self, x: Tensor | SparseMatrix, graph: MaskedGraph) -> Tensor:
        h = dropout(x, self.dropout, self.training) @ self.lin.weight
        if self.K:
            op = graph.gcn_operator()
            for _ in range(self.K):
                h = op @ h
        return h + self.lin.bias

    def macs(self, num_nodes: int, kept_edges: int, kept_weights: dict[str, int],
             live_units: Mapping[str, Tensor] | None = None) -> list[dict]:
        """One transform (kept weights x nodes), then one row per propagation step:
        operator entries x ``out_channels``. SGC has no hidden units (``live_units`` is unused)."""
        entries = gcn_operator_entries(kept_edges, num_nodes)
        width = self.lin.weight.size(1)
        return ([{"layer": "lin", "transform": transform_macs(kept_weights["lin.weight"], num_nodes), "aggregation": 0}]
                + [{"layer": f"prop.{k}", "transform": 0, "aggregation": aggregation_macs(entries, width)}
                   for k in range(self.K)])

    def extra_repr(self) -> str:
        return f"K={self.K}, dropout={self.dropout}"
