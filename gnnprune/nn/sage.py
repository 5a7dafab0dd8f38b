"""GraphSAGE with the mean aggregator (Hamilton et al., NeurIPS 2017) over kept, weighted edges."""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graph import MaskedGraph
from ..macs import aggregation_macs, transform_macs
from ..sparse import SparseMatrix, dropout
from .base import Activation, GraphModel, Linear, UnitGroup, UnitRole, UnitSlice, live_width


class SAGEConv(nn.Module):
    """One GraphSAGE layer with the (weighted) mean aggregator, :math:`X' = X W_r + M X W_n + b`.

    .. math::
        x'_i = W_r^\\top x_i + W_n^\\top \\frac{\\sum_{j \\in N(i)} w_{ij} x_j}{\\sum_{j \\in N(i)} w_{ij}} + b

    :math:`M` is :meth:`MaskedGraph.mean_operator` (kept edges, no self-loops; a node without
    kept neighbours gets a zero mean). An edge of weight 0 is exactly an absent edge. The
    neighbour transform is applied before aggregating, so aggregation costs the output width.

    Args:
        in_channels: input width.
        out_channels: output width.

    Shapes:
        x: ``[N, in_channels]`` (dense or sparse); output ``[N, out_channels]``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.lin_root = Linear(in_channels, out_channels, bias=False)
        self.lin_neigh = Linear(in_channels, out_channels, bias=False)
        self.bias = nn.Parameter(Tensor(out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin_root.reset_parameters()
        self.lin_neigh.reset_parameters()
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor | SparseMatrix, graph: MaskedGraph) -> Tensor:
        return graph.mean_operator().addmm(self.lin_root(x) + self.bias, self.lin_neigh(x))


def drop_edges(graph: MaskedGraph, p: float) -> MaskedGraph:
    """DropEdge (Rong et al., ICLR 2020): each kept undirected edge gets weight 0 with probability ``p``.

    A weight-0 edge is exactly an absent one for the weighted mean, and the mean renormalises
    over the surviving neighbours, so no rescaling is needed. Surviving edges keep their
    (differentiable) weights.
    """
    keep = torch.rand(graph.selection.num_kept) >= p
    weight = keep.float() if graph.edge_weight is None else graph.edge_weight * keep
    return MaskedGraph(graph.selection, weight)


class GraphSAGE(GraphModel):
    """A stack of :class:`SAGEConv` layers with ReLU and dropout.

    With ``edge_dropout > 0``, every training step sees the kept edges thinned by
    :func:`drop_edges` (one draw shared by all layers). This keeps the model from leaning on
    any single neighbour: without it, a node whose neighbours are pruned loses its whole mean
    term, and co-pruning 30% of Cora's edges costs several points of accuracy.

    Args:
        in_channels: number of input features.
        hidden_channels: width of the hidden layers.
        out_channels: number of classes.
        num_layers: number of layers (>= 1).
        dropout: dropout probability before every layer (on the stored values of sparse
            input features).
        edge_dropout: probability of dropping each kept edge in a training step.
    """

    input_weight_names = ("convs.0.lin_root.weight", "convs.0.lin_neigh.weight")

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 num_layers: int = 2, dropout: float = 0.5, edge_dropout: float = 0.0) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= edge_dropout < 1.0:
            raise ValueError(f"edge_dropout must be in [0, 1), got {edge_dropout}")
        widths = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        self.convs = nn.ModuleList(SAGEConv(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.dropout = dropout
        self.edge_dropout = float(edge_dropout)

    def forward(self, x: Tensor | SparseMatrix, graph: MaskedGraph) -> Tensor:
        if self.training and self.edge_dropout > 0.0:
            graph = drop_edges(graph, self.edge_dropout)
        for i, conv in enumerate(self.convs):
            x = conv(dropout(x, self.dropout, self.training), graph)
            if i < len(self.convs) - 1:
                x = F.relu(x)
        return x

    def hidden_units(self) -> dict[str, UnitGroup]:
        """Layer ``i``'s output units (all layers but the last): the root and neighbour weight
        columns and the bias entry, and both weight rows of the next layer; ReLU."""
        return {f"convs.{i}": UnitGroup(conv.bias.numel(), (
                    UnitSlice(f"convs.{i}.lin_root.weight", (1,), UnitRole.PRODUCER),
                    UnitSlice(f"convs.{i}.lin_neigh.weight", (1,), UnitRole.PRODUCER),
                    UnitSlice(f"convs.{i}.bias", (0,), UnitRole.BIAS),
                    UnitSlice(f"convs.{i + 1}.lin_root.weight", (0,), UnitRole.CONSUMER),
                    UnitSlice(f"convs.{i + 1}.lin_neigh.weight", (0,), UnitRole.CONSUMER)), Activation.RELU)
                for i, conv in enumerate(self.convs[:-1])}

    def macs(self, num_nodes: int, kept_edges: int, kept_weights: dict[str, int],
             live_units: Mapping[str, Tensor] | None = None) -> list[dict]:
        """Per-layer MACs: kept root and neighbour weights x nodes, plus mean-operator entries
        (both directions of each kept edge) x live output width."""
        return [{"layer": f"convs.{i}",
                 "transform": transform_macs(kept_weights[f"convs.{i}.lin_root.weight"]
                                             + kept_weights[f"convs.{i}.lin_neigh.weight"], num_nodes),
                 "aggregation": aggregation_macs(2 * kept_edges, live_width(live_units, f"convs.{i}", conv.bias.numel()))}
                for i, conv in enumerate(self.convs)]
