r"""CAP (Wang et al., 2022), instance complexity-aware importance: per-sample soft channel masks,
summed over the data with hard samples weighted more (:math:`I_c = \sum_n h_n m_c(x_n) / \sum_n h_n`).
The masks come from a training phase (:mod:`cnn_bridge.cap`), whose result the view carries as
``view.learned``; this callable only reads it."""
from __future__ import annotations

from torch import Tensor

from .view import LayerView


def cap(view: LayerView) -> Tensor:
    """Scores ``[C]``: the learned importance (low = pruned first)."""
    return view.require_learned("cap").double()
