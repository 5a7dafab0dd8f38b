r"""Channel Lipschitzness (Zheng et al., 2022), data-free. With the batch norm folded in,
channel ``c`` computes :math:`s_c W_c * x + t_c`; its Lipschitz upper bound is

.. math::
    \mathrm{UCLC}_c = \lVert s_c W_c \rVert_2,

the spectral norm of the filter reshaped to ``[C_in, k_h k_w]``. Channels far above the layer's
mean (:math:`\mathrm{UCLC}_c > \mu + u \sigma`) are the backdoor-defence prune set. As a score,
``clp`` returns :math:`-\mathrm{UCLC}_c`, so the most anomalous channels are pruned first."""
from __future__ import annotations

import torch
from torch import Tensor

from .view import LayerView, bn_scale_shift


def channel_lipschitz(view: LayerView) -> Tensor:
    """:math:`\\mathrm{UCLC}_c`, shape ``[C]``."""
    scale, _ = bn_scale_shift(view)
    w = view.conv.weight.detach()
    folded = (w * scale.view(-1, 1, 1, 1)).reshape(w.shape[0], w.shape[1], -1)
    return torch.linalg.matrix_norm(folded.double(), ord=2)


def clp(view: LayerView) -> Tensor:
    """Scores ``[C]`` = ``-UCLC``."""
    return -channel_lipschitz(view)


def clp_flagged(view: LayerView, u: float = 3.0) -> Tensor:
    """Bool ``[C]``: channels with :math:`\\mathrm{UCLC}_c > \\mu + u \\sigma` (population std)."""
    bound = channel_lipschitz(view)
    return bound > bound.mean() + u * bound.std(unbiased=False)
