"""GCNII: deep graph convolutions with initial residual and identity mapping (Chen et al., ICML 2020)."""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from ..graph import MaskedGraph
from ..macs import aggregation_macs, gcn_operator_entries, transform_macs
from ..sparse import SparseMatrix, dropout
from .base import Activation, GraphModel, Linear, UnitGroup, UnitRole, UnitSlice, live_width


class GCN2Conv(nn.Module):
    """One GCNII layer at depth :math:`\\ell`.

    .. math::
        X' = \\big((1 - \\alpha)\\,\\hat{A} X + \\alpha X^{(0)}\\big)
             \\big((1 - \\beta_\\ell) I + \\beta_\\ell W\\big), \\qquad
        \\beta_\\ell = \\log\\!\\left(\\frac{\\theta}{\\ell} + 1\\right)

    :math:`\\hat{A}` is the normalised adjacency of the kept edges with self-loops
    (:meth:`MaskedGraph.gcn_operator`, shared by all layers of a step), :math:`X^{(0)}` the
    initial representation (initial residual) and :math:`W` the only weight (no bias). A
    pruned weight shrinks the transform towards the identity map, never to zero.

    Args:
        channels: input and output width.
        alpha: strength :math:`\\alpha` of the initial residual.
        theta: :math:`\\theta` of the identity-mapping strength :math:`\\beta_\\ell`.
        layer: depth :math:`\\ell \\geq 1` of this layer.

    Shapes:
        x, x0: ``[N, channels]``; output ``[N, channels]``.
    """

    def __init__(self, channels: int, alpha: float, theta: float, layer: int) -> None:
        super().__init__()
        if layer < 1:
            raise ValueError(f"layer must be >= 1, got {layer}")
        self.lin = Linear(channels, channels, bias=False)
        self.alpha = float(alpha)
        self.beta = math.log(theta / layer + 1.0)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()

    def forward(self, x: Tensor, x0: Tensor, graph: MaskedGraph) -> Tensor:
        h = graph.gcn_operator().addmm(x0, x, beta=self.alpha, alpha=1.0 - self.alpha)
        return (1.0 - self.beta) * h + self.beta * self.lin(h)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta:.4f}"


class GCNII(GraphModel):
    """Input linear layer, ``num_layers`` :class:`GCN2Conv` layers, output linear layer.

    .. math::
        H^{(0)} = \\mathrm{ReLU}(X W_{in} + b_{in}), \\qquad
        H^{(\\ell)} = \\mathrm{ReLU}\\big(\\mathrm{GCN2Conv}_\\ell(H^{(\\ell-1)}, H^{(0)})\\big), \\qquad
        Z = H^{(L)} W_{out} + b_{out}

    with dropout on the input (on the stored values of sparse features) and before every
    later layer, as in the authors' code. The paper's Cora model has 64 layers; the registered
    default is 16 (4x cheaper, same accuracy band). Train with :meth:`param_groups`: the
    paper's two weight decays matter.

    Args:
        in_channels: number of input features.
        hidden_channels: width of every GCNII layer.
        out_channels: number of classes.
        num_layers: number of GCNII layers :math:`L` (>= 1).
        dropout: dropout probability.
        alpha: initial-residual strength.
        theta: identity-mapping hyperparameter (:math:`\\lambda` in the paper).
        conv_weight_decay: L2 penalty on the GCNII layers' weights (see :meth:`param_groups`).
    """

    input_weight_names = ("lin_in.weight",)

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 num_layers: int = 16, dropout: float = 0.6, alpha: float = 0.1, theta: float = 0.5,
                 conv_weight_decay: float = 0.01) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if conv_weight_decay < 0:
            raise ValueError(f"conv_weight_decay must be >= 0, got {conv_weight_decay}")
        self.lin_in = Linear(in_channels, hidden_channels)
        self.convs = nn.ModuleList(GCN2Conv(hidden_channels, alpha, theta, layer) for layer in range(1, num_layers + 1))
        self.lin_out = Linear(hidden_channels, out_channels)
        self.dropout = dropout
        self.conv_weight_decay = float(conv_weight_decay)

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Optimizer groups as in the paper: ``conv_weight_decay`` on the GCNII layers' weights,
        ``weight_decay`` on the input and output layers.

        A single decay for all parameters trains worse on Cora (measured with 16 layers: 5e-4
        under-regularises the deep layers; 2e-3 and above shrink the input layer, whose rows
        read row-normalised features, until training fails).
        """
        return [{"params": list(self.convs.parameters()), "weight_decay": self.conv_weight_decay},
                {"params": [*self.lin_in.parameters(), *self.lin_out.parameters()], "weight_decay": weight_decay}]

    def forward(self, x: Tensor | SparseMatrix, graph: MaskedGraph) -> Tensor:
        x = x0 = F.relu(self.lin_in(dropout(x, self.dropout, self.training)))
        for conv in self.convs:
            x = F.relu(conv(dropout(x, self.dropout, self.training), x0, graph))
        return self.lin_out(dropout(x, self.dropout, self.training))

    def hidden_units(self) -> dict[str, UnitGroup]:
        """One group, ``hidden``: channel ``c`` across the whole stack.

        The initial residual adds :math:`X^{(0)}` to every layer and the identity mapping
        carries each channel through, so all layers share one width and a channel is pruned
        everywhere at once: ``lin_in``'s column and bias entry, row and column ``c`` of every
        GCNII weight, ``lin_out``'s row. With those zero the channel of :math:`X^{(0)}` is 0
        and stays 0 through every layer (exactly). The activation is ``lin_in``'s ReLU: with
        every producer column zero and ``relu(b_c) = 0`` the channel is 0 in every layer.
        """
        slices = [UnitSlice("lin_in.weight", (1,), UnitRole.PRODUCER), UnitSlice("lin_in.bias", (0,), UnitRole.BIAS)]
        for i in range(len(self.convs)):
            slices += [UnitSlice(f"convs.{i}.lin.weight", (1,), UnitRole.PRODUCER),
                       UnitSlice(f"convs.{i}.lin.weight", (0,), UnitRole.CONSUMER)]
        slices.append(UnitSlice("lin_out.weight", (0,), UnitRole.CONSUMER))
        return {"hidden": UnitGroup(self.lin_in.weight.size(1), tuple(slices), Activation.RELU)}

    def macs(self, num_nodes: int, kept_edges: int, kept_weights: dict[str, int],
             live_units: Mapping[str, Tensor] | None = None) -> list[dict]:
        """Per-layer MACs: kept weights x nodes, plus operator entries x live width for the GCNII layers."""
        entries = gcn_operator_entries(kept_edges, num_nodes)
        layers = [{"layer": "lin_in", "transform": transform_macs(kept_weights["lin_in.weight"], num_nodes),
                   "aggregation": 0}]
        layers += [{"layer": f"convs.{i}",
                    "transform": transform_macs(kept_weights[f"convs.{i}.lin.weight"], num_nodes),
                    "aggregation": aggregation_macs(entries, live_width(live_units, "hidden", conv.lin.weight.size(0)))}
                   for i, conv in enumerate(self.convs)]
        layers.append({"layer": "lin_out", "transform": transform_macs(kept_weights["lin_out.weight"], num_nodes),
                       "aggregation": 0})
        return layers
