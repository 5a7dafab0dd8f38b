"""Graph convolutional network (Kipf & Welling, ICLR 2017) over kept edges."""
from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from ..graph import MaskedGraph
from ..macs import aggregation_macs, gcn_operator_entries, transform_macs
from ..sparse import SparseMatrix, dropout, propagate_first
from .base import Activation, GraphModel, Linear, UnitGroup, UnitRole, UnitSlice, live_width


class GCNConv(nn.Module):
    """One graph convolution, :math:`X' = \\hat{A} X W + b`.

    :math:`\\hat{A}` is the normalised adjacency of the kept edges with self-loops
    (:meth:`MaskedGraph.gcn_operator`), recomputed from the current edge weights each step and
    built on a sparsity pattern cached per edge mask. Dense inputs narrower than the output
    are propagated before the transform, :math:`(\hat{A} X) W`, which costs less.

    Args:
        in_channels: input width.
        out_channels: output width.

    Shapes:
        x: ``[N, in_channels]`` (dense or sparse); output ``[N, out_channels]``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.lin = Linear(in_channels, out_channels, bias=False)
        self.bias = nn.Parameter(Tensor(out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor | SparseMatrix, graph: MaskedGraph) -> Tensor:
        # (A X) W == A (X W): propagate at the narrower width (dense inputs only).
        if not isinstance(x, SparseMatrix) and self.aggregates_first:
            return self.lin(propagate_first(graph.gcn_operator(), x)).add_(self.bias)
        return graph.gcn_operator().addmm(self.bias, self.lin(x))

    @property
    def aggregates_first(self) -> bool:
        return self.lin.weight.size(0) < self.lin.weight.size(1)

    @property
    def propagated_width(self) -> int:
        return min(self.lin.weight.shape)


class GCN(GraphModel):
    """A stack of :class:`GCNConv` layers with ReLU and dropout.

    Args:
        in_channels: number of input features.
        hidden_channels: width of the hidden layers.
        out_channels: number of classes.
        num_layers: number of graph convolutions (>= 1).
        dropout: dropout probability before every convolution (on the stored values of
            sparse input features, as in the original GCN).
    """

    input_weight_names = ("convs.0.lin.weight",)

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 num_layers: int = 2, dropout: float = 0.5) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        widths = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        self.convs = nn.ModuleList(GCNConv(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.dropout = dropout

    def forward(self, x: Tensor | SparseMatrix, graph: MaskedGraph) -> Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(dropout(x, self.dropout, self.training), graph)
            if i < len(self.convs) - 1:
                x = F.relu(x, inplace=True)  # no backward needs the convolution's output
        return x

    def hidden_units(self) -> dict[str, UnitGroup]:
        """Layer ``i``'s output units (all layers but the last): its weight column and bias
        entry, and the next layer's weight row; ReLU."""
        return {f"convs.{i}": UnitGroup(conv.bias.numel(), (
                    UnitSlice(f"convs.{i}.lin.weight", (1,), UnitRole.PRODUCER),
                    UnitSlice(f"convs.{i}.bias", (0,), UnitRole.BIAS),
                    UnitSlice(f"convs.{i + 1}.lin.weight", (0,), UnitRole.CONSUMER)), Activation.RELU)
                for i, conv in enumerate(self.convs[:-1])}

    def macs(self, num_nodes: int, kept_edges: int, kept_weights: dict[str, int],
             live_units: Mapping[str, Tensor] | None = None) -> list[dict]:
        """Per-layer MACs: kept weights x nodes, plus operator entries x propagated width
        (the narrower of the layer's live input and output widths)."""
        entries = gcn_operator_entries(kept_edges, num_nodes)
        rows = []
        for i, conv in enumerate(self.convs):
            width_in, width_out = conv.lin.weight.shape
            width = min(live_width(live_units, f"convs.{i - 1}", width_in), live_width(live_units, f"convs.{i}", width_out))
            rows.append({"layer": f"convs.{i}",
                         "transform": transform_macs(kept_weights[f"convs.{i}.lin.weight"], num_nodes),
                         "aggregation": aggregation_macs(entries, width)})
        return rows
