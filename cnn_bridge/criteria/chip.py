r"""CHIP (Sui et al., 2021): channel independence. With the layer's activation of image ``n`` as a
matrix :math:`A_n \in \mathbb{R}^{C \times HW}`, channel ``c`` scores

.. math::
    s_c = \frac{1}{N} \sum_n \lVert A_n \rVert_* - \lVert A_n^{(c)} \rVert_*,

where :math:`A_n^{(c)}` has row ``c`` zeroed. A channel that other channels span (a duplicate)
barely changes the nuclear norm and is pruned first."""
from __future__ import annotations

import torch
from torch import Tensor

from .view import LayerView


def chip(view: LayerView) -> Tensor:
    """Scores ``[C]`` from ``view.features`` ``[N, C, H, W]``."""
    features = view.require_features("chip").double()
    n, c = features.shape[:2]
    matrices = features.reshape(n, c, -1)
    full = torch.linalg.matrix_norm(matrices, ord="nuc")
    scores = torch.empty(c, dtype=torch.float64)
    for channel in range(c):
        without = matrices.clone()
        without[:, channel] = 0
        scores[channel] = (full - torch.linalg.matrix_norm(without, ord="nuc")).mean()
    return scores
