r"""Central filter (Li et al., 2021): channels whose feature maps are nearly copies of other
channels' are redundant; the removed ones are folded into their most similar kept channel.

Similarity is the Pearson correlation of two channels' activations over images and positions,
:math:`S_{ij} = \operatorname{corr}(a_i, a_j)`. Scores come from a greedy elimination over the
remaining channels :math:`R`: take the most similar pair and drop its less central member, the one
with the smaller :math:`\sum_{k \in R, k \ne i} S_{ik}`; a channel's score is the step at which it
was dropped, so the first dropped is pruned first.

Ties do not depend on rounding: similarities within :data:`~.view.TIE_RTOL` of each other are tied
(the first pair in ``(i, j)`` order wins), and so are centralities within ``TIE_RTOL`` times the
number of terms summed (each :math:`|S_{ik}| \le 1`); a tied pair drops its larger index. Two
duplicated channels are thus dropped later-first on every CPU, although their centralities are
sums of the same numbers in different orders.

Compensation (:func:`compensate`): for a removed channel ``j`` with most similar kept channel ``k``,
:math:`a_j \approx \alpha a_k` with :math:`\alpha = \langle a_j, a_k \rangle / \lVert a_k \rVert^2`, so
:math:`W'_{:,k} \mathrel{+}= \alpha W'_{:,j}` keeps the next layer's output; exact when ``a_j = a_k``."""
from __future__ import annotations

import torch
from torch import Tensor

from gnnprune.masks import tolerant_argmax

from .view import TIE_RTOL, LayerView


def similarity(features: Tensor) -> Tensor:
    """Pearson correlation ``[C, C]`` of channel activations ``[N, C, H, W]``, exactly symmetric
    (0 for constant channels)."""
    flat = features.double().transpose(0, 1).reshape(features.shape[1], -1)
    live = flat.amax(1) > flat.amin(1)  # exact: a constant channel's centred values would be rounding noise
    flat = flat - flat.mean(1, keepdim=True)
    norm = torch.where(live, flat.norm(dim=1), torch.ones((), dtype=torch.float64))
    unit = flat / norm.unsqueeze(1)
    sim = unit @ unit.T
    sim = (sim + sim.T) / 2
    return sim * (live.unsqueeze(0) & live.unsqueeze(1))


def eliminate(sim: Tensor) -> Tensor:
    """Elimination steps ``[C]`` (float64) from a symmetric similarity ``[C, C]``; its diagonal is ignored."""
    c = sim.shape[0]
    off_diagonal = sim.double().clone().fill_diagonal_(0)
    upper = torch.ones(c, c, dtype=torch.bool).triu(1)
    remaining = torch.ones(c, dtype=torch.bool)
    scores = torch.full((c,), float(c - 1), dtype=torch.float64)
    for step in range(c - 1):
        pairs = torch.where(upper & remaining.unsqueeze(0) & remaining.unsqueeze(1), off_diagonal, float("-inf"))
        i, j = divmod(tolerant_argmax(pairs.view(-1), TIE_RTOL), c)  # i < j; similarities lie in [-1, 1]
        centrality = (off_diagonal * remaining).sum(1)
        atol = TIE_RTOL * (int(remaining.sum()) - 1)
        drop = i if float(centrality[i]) < float(centrality[j]) - atol else j
        scores[drop] = step
        remaining[drop] = False
    return scores


def central(view: LayerView) -> Tensor:
    """Scores ``[C]``: elimination step (0 = dropped first, ``C - 1`` = kept last)."""
    return eliminate(similarity(view.require_features("central")))


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
        k = int(kept[tolerant_argmax(sim[j, kept], TIE_RTOL)])  # tied most similar: the lowest index
        alpha = float(flat[j] @ flat[k] / (flat[k] @ flat[k]).clamp_min(1e-300))
        for module in view.consumers:
            w = module.weight.data.view(module.weight.shape[0], view.channels, -1)
            w[:, k] += alpha * w[:, j]
