r"""Sensitivity analysis (Li et al., 2017): prune one layer alone at a few fractions, measure the
accuracy drop, and give each layer the largest fraction whose drop stays within a tolerance
:math:`\tau`; channels within a layer are then chosen by another criterion (``inner``, default L1).

:func:`sensitivity` is the per-channel callable (the inner criterion's scores);
:func:`fractions_within` turns measured drops into per-layer fractions for one :math:`\tau`;
the prune flow searches :math:`\tau` to reach a MAC target."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from .l1 import l1
from .view import LayerView


def sensitivity(view: LayerView, inner: Callable[[LayerView], Tensor] = l1) -> Tensor:
    """Scores ``[C]`` within the layer (the inner criterion's)."""
    return inner(view)


def fractions_within(drops: dict[str, Sequence[float]], fractions: Sequence[float], tolerance: float) -> dict[str, float]:
    """Per layer, the largest of ``fractions`` whose accuracy drop is at most ``tolerance`` (0 if none).

    Args:
        drops: ``{layer: [drop at fractions[0], drop at fractions[1], ...]}``.
        fractions: increasing pruned fractions.
    """
    chosen = {}
    for name, layer_drops in drops.items():
        ok = [f for f, d in zip(fractions, layer_drops) if d <= tolerance]
        chosen[name] = max(ok, default=0.0)
    return chosen
