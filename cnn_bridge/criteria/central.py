r"""Central filter (Li et al., 2021): channels whose feature maps are nearly copies of other
channels' are redundant; the removed ones are folded into their most similar kept channel.

Similarity is the Pearson correlation of two channels' activations over images and positions,
:math:`S_{ij} = \operatorname{corr}(a_i, a_j)`. Scores come from a greedy elimination: repeatedly
take the most similar remaining pair and drop its less central member (smaller
:math:`\sum_{k \in R} S_{ik}`; ties drop the larger index); a channel's score is the step at which
it was dropped, so the first dropped is pruned first.

Compensation (:func:`compensate`): for a removed channel ``j`` with most similar kept channel ``k``,
:math:`a_j \approx \alpha a_k` with :math:`\alpha = \langle a_j, a_k \rangle / \lVert a_k \rVert^2`, so
:math:`W'_{:,k} \mathrel{+}= \alpha W'_{:,j}` keeps the next layer's output; exact when ``a_j = a_k``."""
from __future__ import annotations

import torch
from torch import Tensor

from .view import LayerView


def similarity(features: Tensor) -> Tensor:
    """Pearson correlation ``[C, C]`` of channel activations ``[N, C, H, W]`` (0 for constant channels)."""
    flat = features.double().transpose(0, 1).reshape(features.shape[1], -1)
    flat = flat - flat.mean(1, keepdim=True)
    norm = flat.norm(dim=1)
    safe = torch.where(norm > 1e-12, norm, torch.ones_like(norm))
    unit = flat / safe.unsqueeze(1)
    sim = unit @ unit.T
    live = norm > 1e-12
    return sim * (live.unsqueeze(0) & live.unsqueeze(1))


def central(view: LayerView) -> Tensor:
    """Scores ``[C]``: elimination step (0 = dropped first, ``C - 1`` = kept last)."""
    sim = similarity(view.require_features("central"))
    c = sim.shape[0]
    sim.fill_diagonal_(float("-inf"))
    remaining = torch.ones(c, dtype=torch.bool)
    scores = torch.full((c,), float(c - 1))
    for step in range(c - 1):
        pair = torch.where(remaining.unsqueeze(0) & remaining.unsqueeze(1), sim, torch.full_like(sim, float("-inf")))
        i, j = divmod(int(pair.argmax()), c)
        centrality = torch.where(remaining.unsqueeze(0), sim.clamp_min(-1), torch.zeros_like(sim)).sum(1)
        a, b = min(i, j), max(i, j)
        drop = a if centrality[a] < centrality[b] else b
        scores[drop] = step
        remaining[drop] = False
    return scores


@torch.no_grad()
def compensate(view: LayerView, keep: Tensor) -> None:
    """Fold each removed channel's consumer weights into its most similar kept channel, in place.

    Args:
        keep: bool ``[C]``, the channels that stay.
    """
    features = view.require_features("central").double()
    if not keep.any():
        raise ValueError(f"{view.name}: cannot compensate with no kept channel")
    sim = similarity(features)
    flat = features.transpose(0, 1).reshape(view.channels, -1)
    kept = keep.nonzero().view(-1)
    for j in (~keep).nonzero().view(-1).tolist():
        k = int(kept[sim[j, kept].argmax()])
        alpha = float(flat[j] @ flat[k] / (flat[k] @ flat[k]).clamp_min(1e-300))
        for module in view.consumers:
            w = module.weight.data.view(module.weight.shape[0], view.channels, -1)
            w[:, k] += alpha * w[:, j]
