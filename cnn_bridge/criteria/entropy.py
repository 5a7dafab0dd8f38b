r"""Feature entropy (Wang et al., 2020): the entropy of a channel's globally pooled activation
over images, from a histogram with ``bins`` equal bins over the channel's range:
:math:`s_c = -\sum_b p_b \log p_b`. A constant (e.g. dead) channel has entropy 0."""
from __future__ import annotations

import torch
from torch import Tensor

from .view import LayerView


def entropy(view: LayerView, bins: int = 16) -> Tensor:
    """Scores ``[C]`` from ``view.features`` ``[N, C, H, W]``; low-entropy channels are pruned first."""
    pooled = view.require_features("entropy").double().mean((2, 3))  # [N, C]
    low, high = pooled.min(0).values, pooled.max(0).values
    span = (high - low).clamp_min(1e-12)
    index = ((pooled - low) / span * bins).long().clamp(0, bins - 1)
    counts = torch.zeros(bins, pooled.shape[1], dtype=torch.float64).scatter_add_(0, index, torch.ones_like(pooled))
    p = counts / pooled.shape[0]
    scores = -(p * torch.log(p.clamp_min(1e-300))).sum(0)
    return torch.where(high - low > 1e-12, scores, torch.zeros_like(scores))
