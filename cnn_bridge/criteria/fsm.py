r"""Feature shift minimisation (Duan et al., 2022), data-free. The batch norm says channel ``c``'s
pre-activation is about :math:`\mathcal{N}(t_c, s_c^2)` (``t_c = beta_c``, ``s_c = |gamma_c|``), so the
expected ReLU output is

.. math::
    \mathbb{E}[a_c] = t_c \Phi(t_c / s_c) + s_c \varphi(t_c / s_c).

Removing channel ``c`` shifts the next layer's output ``o`` by
:math:`\mathbb{E}[a_c] \sum_{k} W'_{o,c,k}`; the score is the norm of that shift over all consumer
outputs, :math:`s_c = \mathbb{E}[a_c] \, \lVert \sum_k W'_{:,c,k} \rVert_2`."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .view import LayerView


def expected_relu(mean: Tensor, std: Tensor) -> Tensor:
    """:math:`\\mathbb{E}[\\max(0, z)]` for :math:`z \\sim \\mathcal{N}(\\text{mean}, \\text{std}^2)`, elementwise."""
    std = std.clamp_min(1e-12)
    z = mean / std
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return mean * cdf + std * pdf


def fsm(view: LayerView) -> Tensor:
    """Scores ``[C]``; needs a batch norm and at least one consumer."""
    if view.bn is None or not view.consumers:
        raise ValueError(f"fsm needs a batch norm and a next layer after {view.name!r}")
    expected = expected_relu(view.bn.bias.detach().double(), view.bn.weight.detach().abs().double())
    shift = torch.zeros(view.channels, dtype=torch.float64)
    for w in view.consumer_weights():
        shift += w.double().sum(2).pow(2).sum(0)
    return expected * shift.sqrt()
