r"""Filter L1 norm (Li et al., 2017): :math:`s_c = \lVert W_{c,:,:,:} \rVert_1`."""
from __future__ import annotations

from torch import Tensor

from .view import LayerView


def l1(view: LayerView) -> Tensor:
    """Scores ``[C]``; small filters are pruned first."""
    w = view.conv.weight.detach().double()
    return w.abs().reshape(w.shape[0], -1).sum(1)
