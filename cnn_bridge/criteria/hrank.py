r"""HRank (Lin et al., 2020): average rank of a channel's feature maps,
:math:`s_c = \frac{1}{N} \sum_n \operatorname{rank}(F_{n,c})` with :math:`F_{n,c} \in \mathbb{R}^{H \times W}`."""
from __future__ import annotations

import torch
from torch import Tensor

from .view import LayerView


def hrank(view: LayerView) -> Tensor:
    """Scores ``[C]`` from ``view.features`` ``[N, C, H, W]``; low-rank maps are pruned first."""
    features = view.require_features("hrank")
    return torch.linalg.matrix_rank(features.double()).double().mean(0)
