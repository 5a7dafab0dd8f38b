"""ResGCN: a deep stack of pre-activation residual GCN blocks (DeepGCNs, Li et al. 2019; "res+", Li et al. 2020)."""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graph import MaskedGraph
from ..macs import aggregation_macs, gcn_operator_entries, transform_macs
from ..sparse import SparseMatrix, dropout
from .base import GraphModel, Linear, UnitGroup, UnitRole, UnitSlice, live_width
from .gcn import GCNConv

NORMS = ("layer", "batch", "none")


class LiveLayerNorm(nn.LayerNorm):
    """LayerNorm over the last axis whose statistics leave out channels with zero scale and shift.

    .. math::
        y_c = \frac{x_c - \mu}{\sqrt{\sigma^2 + \epsilon}}\, \gamma_c + \beta_c, \qquad
        \mu = \frac{1}{|L|} \sum_{c \in L} x_c, \qquad
        \sigma^2 = \frac{1}{|L|} \sum_{c \in L} (x_c - \mu)^2, \qquad
        L = \{c : \gamma_c \neq 0 \lor \beta_c \neq 0\}

    While every channel is live this is ``nn.LayerNorm`` (same call, over the width of ``x``, so
    the layer keeps working once channels are cut from its scale and shift). A hidden unit pruned by
    unit (:meth:`ResGCN.hidden_units`) has :math:`\gamma_c = \beta_c = 0` and outputs 0, and the
    other channels are normalised as in the model without it, so cutting it out is exact.
    A plain LayerNorm would count the zero channel in :math:`\mu` and :math:`\sigma^2`.

    Shapes:
        x: ``[..., channels]``; output the same.
    """

    def forward(self, x: Tensor) -> Tensor:
        live = (self.weight != 0) | (self.bias != 0)
        if bool(live.all()):
            return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        keep = live.to(x.dtype)
        count = keep.sum().clamp_min(1.0)
        mean = (x * keep).sum(-1, keepdim=True) / count
        centred = (x - mean) * keep
        variance = centred.square().sum(-1, keepdim=True) / count
        return centred * torch.rsqrt(variance + self.eps) * self.weight + self.bias


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "layer":
        return LiveLayerNorm(channels)
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {kind!r}")


class ResGCNBlock(nn.Module):
    """One pre-activation residual block around a graph convolution ("res+", Li et al. 2020).

    .. math::
        H' = H + \\hat{A}\\,\\mathrm{Dropout}\\big(\\mathrm{ReLU}(\\mathrm{Norm}(H))\\big) W + b

    :math:`\\hat{A}` is the normalised adjacency of the kept edges with self-loops
    (:meth:`MaskedGraph.gcn_operator`, shared by all blocks of a step). Normalising before the
    convolution keeps the residual stream's scale in check at any depth. The norm's scale
    and shift are 1-D, so element pruning never touches them (unit pruning does, see
    :meth:`ResGCN.hidden_units`); a block whose weight is pruned away entirely adds only its bias.

    Args:
        channels: input and output width.
        dropout: dropout probability on the residual branch.
        norm: ``"layer"`` (LayerNorm), ``"batch"`` (BatchNorm over nodes) or ``"none"``.

    Shapes:
        x: ``[N, channels]``; output ``[N, channels]``.
    """

    def __init__(self, channels: int, dropout: float = 0.5, norm: str = "layer") -> None:
        super().__init__()
        self.norm = _norm(norm, channels)
        self.conv = GCNConv(channels, channels)
        self.dropout = dropout
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if hasattr(self.norm, "reset_parameters"):
            self.norm.reset_parameters()
        self.conv.reset_parameters()

    def forward(self, x: Tensor, graph: MaskedGraph) -> Tensor:
        h = dropout(F.relu(self.norm(x)), self.dropout, self.training)
        return x + self.conv(h, graph)


class ResGCN(GraphModel):
    """Input linear layer, ``num_layers`` :class:`ResGCNBlock` blocks, output linear layer.

    .. math::
        H^{(0)} = X W_{in} + b_{in}, \\qquad
        H^{(\\ell)} = \\mathrm{ResGCNBlock}_\\ell(H^{(\\ell-1)}), \\qquad
        Z = \\mathrm{Dropout}\\big(\\mathrm{ReLU}(\\mathrm{Norm}(H^{(L)}))\\big) W_{out} + b_{out}

    with dropout on the input features (on the stored values of sparse features). The final
    norm keeps the logits' scale independent of depth.

    Args:
        in_channels: number of input features.
        hidden_channels: width of every block.
        out_channels: number of classes.
        num_layers: number of residual blocks :math:`L` (>= 1).
        dropout: dropout probability (input, every residual branch, before the output layer).
        norm: normalisation inside each block, see :class:`ResGCNBlock`.
    """

    input_weight_names = ("lin_in.weight",)

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 num_layers: int = 8, dropout: float = 0.5, norm: str = "layer") -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.lin_in = Linear(in_channels, hidden_channels)
        self.blocks = nn.ModuleList(ResGCNBlock(hidden_channels, dropout, norm) for _ in range(num_layers))
        self.norm_out = _norm(norm, hidden_channels)
        self.lin_out = Linear(hidden_channels, out_channels)
        self.dropout = dropout

    def forward(self, x: Tensor | SparseMatrix, graph: MaskedGraph) -> Tensor:
        x = self.lin_in(dropout(x, self.dropout, self.training))
        for block in self.blocks:
            x = block(x, graph)
        return self.lin_out(dropout(F.relu(self.norm_out(x)), self.dropout, self.training))

    def hidden_units(self) -> dict[str, UnitGroup]:
        """One group, ``hidden``: channel ``c`` of the residual stream across the whole stack.

        The residual sums tie every block to one width, so a channel is pruned everywhere at
        once: ``lin_in``'s column and bias entry; in every block the norm's scale and shift,
        row and column ``c`` of the convolution weight and its bias entry; the final norm's
        scale and shift; ``lin_out``'s row. The stream's channel then starts at 0 and no block
        adds to it. The norms leave such a channel out of their statistics
        (:class:`LiveLayerNorm`; BatchNorm is per channel anyway), so the pruned model equals
        the narrower one exactly. The stream has no activation; BatchNorm's running statistics
        are cut out with the channel.
        """
        slices = [UnitSlice("lin_in.weight", (1,), UnitRole.PRODUCER), UnitSlice("lin_in.bias", (0,), UnitRole.BIAS)]
        for i, block in enumerate(self.blocks):
            slices += _norm_slices(f"blocks.{i}.norm", block.norm)
            slices += [UnitSlice(f"blocks.{i}.conv.lin.weight", (1,), UnitRole.PRODUCER),
                       UnitSlice(f"blocks.{i}.conv.lin.weight", (0,), UnitRole.CONSUMER),
                       UnitSlice(f"blocks.{i}.conv.bias", (0,), UnitRole.BIAS)]
        slices += _norm_slices("norm_out", self.norm_out)
        slices.append(UnitSlice("lin_out.weight", (0,), UnitRole.CONSUMER))
        norms = {f"blocks.{i}.norm": block.norm for i, block in enumerate(self.blocks)} | {"norm_out": self.norm_out}
        buffers = tuple(UnitSlice(f"{prefix}.{name}", (0,), UnitRole.STATE) for prefix, norm in norms.items()
                        for name in ("running_mean", "running_var") if getattr(norm, name, None) is not None)
        return {"hidden": UnitGroup(self.lin_in.weight.size(1), tuple(slices), buffers=buffers)}

    def macs(self, num_nodes: int, kept_edges: int, kept_weights: dict[str, int],
             live_units: Mapping[str, Tensor] | None = None) -> list[dict]:
        """Per-layer MACs: kept weights x nodes, plus operator entries x live width for the blocks."""
        entries = gcn_operator_entries(kept_edges, num_nodes)
        layers = [{"layer": "lin_in", "transform": transform_macs(kept_weights["lin_in.weight"], num_nodes),
                   "aggregation": 0}]
        layers += [{"layer": f"blocks.{i}",
                    "transform": transform_macs(kept_weights[f"blocks.{i}.conv.lin.weight"], num_nodes),
                    "aggregation": aggregation_macs(entries, live_width(live_units, "hidden", block.conv.lin.weight.size(1)))}
                   for i, block in enumerate(self.blocks)]
        layers.append({"layer": "lin_out", "transform": transform_macs(kept_weights["lin_out.weight"], num_nodes),
                       "aggregation": 0})
        return layers


def _norm_slices(prefix: str, norm: nn.Module) -> list[UnitSlice]:
    """Scale and shift of a norm layer, if it has them."""
    if getattr(norm, "weight", None) is None:
        return []
    return [UnitSlice(f"{prefix}.weight", (0,), UnitRole.SCALE), UnitSlice(f"{prefix}.bias", (0,), UnitRole.SHIFT)]
