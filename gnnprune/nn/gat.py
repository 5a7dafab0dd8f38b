"""Graph attention network (Veličković et al., ICLR 2018) over kept, weighted edges."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graph import MaskedGraph
from ..macs import aggregation_macs, gcn_operator_entries, transform_macs
from ..sparse import SparseMatrix, dropout, sparse_matmul
from .base import Activation, GraphModel, Linear, UnitGroup, UnitRole, UnitSlice

_MAX_EXPONENT = 60.0  # caps exp() for zero-weight entries scoring above every live one (probe pass)


def attention_coefficients(score_dst: Tensor, score_src: Tensor, graph: MaskedGraph,
                           negative_slope: float = 0.2) -> Tensor:
    """Edge-weighted attention softmax over each node's kept in-edges and its self-loop.

    .. math::
        e_{ij} = \\mathrm{LeakyReLU}(s^{dst}_i + s^{src}_j), \\qquad
        \\alpha_{ij} = \\frac{w_{ij} \\exp(e_{ij})}{\\sum_{k} w_{ik} \\exp(e_{ik})}

    Args:
        score_dst, score_src: ``[N, heads]`` per-node scores (:math:`a_{dst} \\cdot h_i`, :math:`a_{src} \\cdot h_j`).
        graph: kept edges and their weights; entries follow ``graph.selection.gcn_pattern``.
        negative_slope: slope of the LeakyReLU.

    Returns:
        ``[nnz, heads]`` coefficients in pattern order.
    """
    n, heads = score_dst.shape
    pattern = graph.selection.gcn_pattern[0]
    row, col = pattern.row, pattern.col  # target, source of each stored entry
    # index_select rather than [row]: its backward is a fast index_add
    e = F.leaky_relu(score_dst.index_select(0, row) + score_src.index_select(0, col), negative_slope)  # [nnz, heads]
    w = graph.gcn_entry_weights()  # computed once per graph, shared by the layers
    if w is None:
        live = e.detach()
    else:
        w = w.unsqueeze(1)
        live = e.detach().masked_fill(w.detach() <= 0, -math.inf)
    top = torch.full((n, heads), -math.inf, dtype=e.dtype).scatter_reduce(
        0, row.unsqueeze(1).expand(-1, heads), live, "amax", include_self=True)  # self-loops keep it finite
    numerator = torch.exp((e - top.index_select(0, row)).clamp_max(_MAX_EXPONENT))
    if w is not None:
        numerator = w * numerator
    denominator = torch.zeros(n, heads, dtype=e.dtype).index_add_(0, row, numerator)
    return numerator / denominator.index_select(0, row)


class GATConv(nn.Module):
    """One multi-head graph attention layer with edge weights in the softmax.

    For every head, with :math:`h = x W` and the kept edges plus a self-loop per node,

    .. math::
        e_{ij} = \\mathrm{LeakyReLU}_{0.2}(a_{dst} \\cdot h_i + a_{src} \\cdot h_j), \\qquad
        \\alpha_{ij} = \\frac{w_{ij} \\exp(e_{ij})}{\\sum_{k} w_{ik} \\exp(e_{ik})}, \\qquad
        x'_i = \\sum_j \\alpha_{ij} h_j + b

    where :math:`w_{ij}` is the weight of edge :math:`(j \\to i)` (1 without edge weights, 1 for
    self-loops). An edge of weight 0 adds nothing to the numerator or the denominator, so it is
    exactly an absent edge (the per-target maximum subtracted for stability is taken over entries
    of positive weight only). Heads are concatenated (``concat``) or averaged. Aggregation
    runs on :attr:`EdgeSelection.gcn_pattern` (kept edges + self-loops, cached per edge mask).

    Args:
        in_channels: input width.
        out_channels: width of each head.
        heads: number of attention heads.
        concat: concatenate heads (output ``heads * out_channels``) rather than average them.
        negative_slope: slope of the LeakyReLU of the attention scores.
        attention_dropout: dropout on the attention coefficients while training.

    Shapes:
        x: ``[N, in_channels]`` (dense or sparse); output ``[N, heads * out_channels]`` if
        ``concat`` else ``[N, out_channels]``. ``att_src``, ``att_dst``: ``[heads, out_channels]``.
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1, concat: bool = True,
                 negative_slope: float = 0.2, attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.out_channels, self.concat = heads, out_channels, concat
        self.negative_slope = negative_slope
        self.attention_dropout = attention_dropout
        self.lin = Linear(in_channels, heads * out_channels, bias=False)
        self.att_src = nn.Parameter(Tensor(heads, out_channels))
        self.att_dst = nn.Parameter(Tensor(heads, out_channels))
        self.bias = nn.Parameter(Tensor(heads * out_channels if concat else out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()
        for att in (self.att_src, self.att_dst):  # Glorot over (heads, out_channels), as in PyG
            bound = math.sqrt(6.0 / (att.size(0) + att.size(1)))
            nn.init.uniform_(att, -bound, bound)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor | SparseMatrix, graph: MaskedGraph) -> Tensor:
        n, heads, channels = graph.num_nodes, self.heads, self.out_channels
        h = self.lin(x).view(n, heads, channels)
        pattern = graph.selection.gcn_pattern[0]
        score_dst = (h * self.att_dst).sum(-1)  # [N, heads]
        score_src = (h * self.att_src).sum(-1)
        alpha = attention_coefficients(score_dst, score_src, graph, self.negative_slope)
        alpha = dropout(alpha, self.attention_dropout, self.training)
        out = torch.stack([sparse_matmul(pattern, alpha[:, k].contiguous(), h[:, k]) for k in range(heads)], dim=1)
        out = out.reshape(n, heads * channels) if self.concat else out.mean(dim=1)
        return out.add_(self.bias)

    def output_units(self, prefix: str) -> UnitGroup:
        """This layer's slices of its output columns (``head * out_channels + channel``), the
        layer named ``prefix``: weight column, bias entry, entry of both attention vectors."""
        if not self.concat:
            raise ValueError("only a GATConv with concatenated heads has per-head output columns")
        return UnitGroup(self.heads * self.out_channels, (
            UnitSlice(f"{prefix}.lin.weight", (1,), UnitRole.PRODUCER),
            UnitSlice(f"{prefix}.bias", (0,), UnitRole.BIAS),
            UnitSlice(f"{prefix}.att_src", (0, 1), UnitRole.CONSUMER),
            UnitSlice(f"{prefix}.att_dst", (0, 1), UnitRole.CONSUMER)))

    def macs(self, num_nodes: int, kept_edges: int, kept_lin: int, kept_att: int, live: Tensor | None = None) -> dict:
        """Transform (``x W`` and the per-node attention scores) and aggregation MACs.

        Aggregation counts, per stored entry (kept edges both ways + self-loops), one MAC per
        head for the weighted attention coefficient and one per output channel of every head.
        ``live``: ``[heads * out_channels]`` bool, the live channels (a head without one is cut
        out); default all.
        """
        entries = gcn_operator_entries(kept_edges, num_nodes)
        channels, heads = self.heads * self.out_channels, self.heads
        if live is not None:
            channels, heads = int(live.sum()), int(live.view(self.heads, self.out_channels).any(1).sum())
        return {"transform": transform_macs(kept_lin, num_nodes) + transform_macs(kept_att, num_nodes),
                "aggregation": aggregation_macs(entries, channels) + aggregation_macs(entries, heads)}


class RaggedGATConv(nn.Module):
    """:class:`GATConv` with concatenated heads of unequal widths, for models whose hidden units were removed.

    Output column :math:`c` belongs to head :math:`k(c)` (``head_index[c]``); with
    :math:`h = x W` and :math:`C_k` the columns of head :math:`k`,

    .. math::
        s^{dst}_{ik} = \\sum_{c \\in C_k} a^{dst}_c h_{ic}, \\qquad
        s^{src}_{jk} = \\sum_{c \\in C_k} a^{src}_c h_{jc}, \\qquad
        x'_{ic} = \\sum_j \\alpha_{ij,k(c)}\\, h_{jc} + b_c

    with :math:`\\alpha` from :func:`attention_coefficients`. A head with no column left is
    gone, with its softmax. :meth:`from_conv` gives the layer of a :class:`GATConv` with
    concatenated heads (same outputs); removing columns from both sides then keeps them, as
    long as a removed column is one whose output nobody reads and whose attention weights
    are zero, or whose ``h`` column and bias are zero.

    Args:
        in_channels: input width.
        head_index: ``[C]`` non-decreasing head of each output column.
        negative_slope: slope of the LeakyReLU of the attention scores.

    Shapes:
        x: ``[N, in_channels]``; output ``[N, C]``. ``att_src``, ``att_dst``, ``bias``: ``[C]``.
    """

    def __init__(self, in_channels: int, head_index: Tensor, negative_slope: float = 0.2) -> None:
        super().__init__()
        head_index = head_index.long()
        if head_index.dim() != 1 or bool((head_index.diff() < 0).any()):
            raise ValueError("head_index must be a non-decreasing 1-D tensor")
        channels = head_index.numel()
        self.lin = Linear(in_channels, channels, bias=False)
        self.att_src = nn.Parameter(torch.zeros(channels))
        self.att_dst = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("head_index", head_index.clone())
        self.negative_slope = negative_slope

    @classmethod
    def from_conv(cls, conv: GATConv) -> "RaggedGATConv":
        """The same layer as ``conv`` (which must concatenate its heads)."""
        if not conv.concat:
            raise ValueError("only a GATConv with concatenated heads has per-head output columns")
        head_index = torch.arange(conv.heads).repeat_interleave(conv.out_channels)
        layer = cls(conv.lin.weight.size(0), head_index, conv.negative_slope)
        with torch.no_grad():
            layer.lin.weight.copy_(conv.lin.weight)
            layer.att_src.copy_(conv.att_src.reshape(-1))
            layer.att_dst.copy_(conv.att_dst.reshape(-1))
            layer.bias.copy_(conv.bias)
        return layer

    def forward(self, x: Tensor | SparseMatrix, graph: MaskedGraph) -> Tensor:
        h = self.lin(x)
        if h.size(1) == 0:
            return h + self.bias
        heads, widths = torch.unique_consecutive(self.head_index, return_counts=True)
        member = (self.head_index.unsqueeze(1) == heads.unsqueeze(0)).to(h.dtype)  # [C, live heads]
        alpha = attention_coefficients((h * self.att_dst) @ member, (h * self.att_src) @ member, graph,
                                       self.negative_slope)
        pattern = graph.selection.gcn_pattern[0]
        parts = h.split(widths.tolist(), dim=1)
        per_head = alpha.t().contiguous()  # one pass over alpha, not one strided copy per head
        out = torch.cat([sparse_matmul(pattern, per_head[k], part) for k, part in enumerate(parts)], dim=1)
        return out.add_(self.bias)

    def output_units(self, prefix: str) -> UnitGroup:
        """As :meth:`GATConv.output_units`, with 1-D attention vectors and the head index carried along."""
        return UnitGroup(self.head_index.numel(), (
            UnitSlice(f"{prefix}.lin.weight", (1,), UnitRole.PRODUCER),
            UnitSlice(f"{prefix}.bias", (0,), UnitRole.BIAS),
            UnitSlice(f"{prefix}.att_src", (0,), UnitRole.CONSUMER),
            UnitSlice(f"{prefix}.att_dst", (0,), UnitRole.CONSUMER)),
            buffers=(UnitSlice(f"{prefix}.head_index", (0,), UnitRole.STATE),))

    def macs(self, num_nodes: int, kept_edges: int, kept_lin: int, kept_att: int, live: Tensor | None = None) -> dict:
        """As :meth:`GATConv.macs`, with the heads and columns present (``live``: of those, the live ones)."""
        entries = gcn_operator_entries(kept_edges, num_nodes)
        head_index = self.head_index if live is None else self.head_index[live]
        heads = int(torch.unique(head_index).numel())
        return {"transform": transform_macs(kept_lin, num_nodes) + transform_macs(kept_att, num_nodes),
                "aggregation": aggregation_macs(entries, head_index.numel()) + aggregation_macs(entries, heads)}


class GAT(GraphModel):
    """A stack of :class:`GATConv` layers: concatenated heads with ELU, then an averaged output layer.

    Args:
        in_channels: number of input features.
        hidden_channels: width of each head of the hidden layers.
        out_channels: number of classes.
        num_layers: number of attention layers (>= 1).
        dropout: dropout probability before every layer (on the stored values of sparse
            input features).
        heads: heads of the hidden layers (concatenated).
        out_heads: heads of the output layer (averaged).
        attention_dropout: dropout on the attention coefficients.
        negative_slope: slope of the LeakyReLU of the attention scores.
    """

    input_weight_names = ("convs.0.lin.weight",)

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, num_layers: int = 2,
                 dropout: float = 0.6, heads: int = 8, out_heads: int = 1, attention_dropout: float = 0.6,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.convs = nn.ModuleList()
        width = in_channels
        for _ in range(num_layers - 1):
            self.convs.append(GATConv(width, hidden_channels, heads, True, negative_slope, attention_dropout))
            width = heads * hidden_channels
        self.convs.append(GATConv(width, out_channels, out_heads, False, negative_slope, attention_dropout))
        self.dropout = dropout

    def forward(self, x: Tensor | SparseMatrix, graph: MaskedGraph) -> Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(dropout(x, self.dropout, self.training), graph)
            if i < len(self.convs) - 1:
                x = F.elu(x)
        return x

    def hidden_units(self) -> dict[str, UnitGroup]:
        """One unit per channel of each head of a hidden (concatenating) layer, numbered as in
        the concatenated output (``head * channels + channel``): its weight column, its entry
        of both attention vectors and of the bias, and the next layer's weight row. A head
        whose channels are all pruned is gone. ELU. The averaged output layer has no units.
        After :meth:`separate_units` the hidden layers are :class:`RaggedGATConv`."""
        groups = {}
        for i, conv in enumerate(self.convs[:-1]):
            own = conv.output_units(f"convs.{i}")
            groups[f"convs.{i}"] = replace(own, activation=Activation.ELU, slices=(
                *own.slices, UnitSlice(f"convs.{i + 1}.lin.weight", (0,), UnitRole.CONSUMER)))
        return groups

    def separate_units(self) -> None:
        """Hidden layers become :class:`RaggedGATConv` (same outputs), whose heads may lose columns unevenly."""
        for i, conv in enumerate(self.convs[:-1]):
            if isinstance(conv, GATConv):
                self.convs[i] = RaggedGATConv.from_conv(conv)

    def macs(self, num_nodes: int, kept_edges: int, kept_weights: dict[str, int],
             live_units: Mapping[str, Tensor] | None = None) -> list[dict]:
        """Per-layer MACs: kept weights x nodes, plus operator entries x (live channels + live heads)."""
        live_units = live_units or {}
        return [{"layer": f"convs.{i}",
                 **conv.macs(num_nodes, kept_edges, kept_weights[f"convs.{i}.lin.weight"],
                             kept_weights[f"convs.{i}.att_src"] + kept_weights[f"convs.{i}.att_dst"],
                             live_units.get(f"convs.{i}"))}
                for i, conv in enumerate(self.convs)]
