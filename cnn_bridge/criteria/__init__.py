"""Filter-pruning criteria on one protocol: ``scores = criterion(view)``, one float64 score per
output channel of the :class:`LayerView`'s convolution, low = pruned first. Scores of one layer
within :data:`TIE_RTOL` of its largest ``|score|`` are ties, broken by channel index (see
:func:`cnn_bridge.allocation.keep_lowest_pruned`).

Data-free: ``l1``, ``clp``, ``fsm``. Data-driven (need ``view.features``): ``hrank``, ``chip``,
``central``, ``entropy``. Trained: ``cap`` reads the importance its training phase learned
(:mod:`cnn_bridge.cap`). ``sensitivity`` scores within a layer like L1; its per-layer fractions come
from measured accuracy drops (see :mod:`.sensitivity`).
"""
from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .cap import cap
from .central import central
from .chip import chip
from .clp import clp, clp_flagged
from .entropy import entropy
from .fsm import fsm
from .hrank import hrank
from .l1 import l1
from .sensitivity import sensitivity
from .view import TIE_RTOL, LayerView

Criterion = Callable[[LayerView], Tensor]

CRITERIA: dict[str, Criterion] = {
    "l1": l1, "hrank": hrank, "chip": chip, "central": central,
    "clp": clp, "fsm": fsm, "entropy": entropy, "sensitivity": sensitivity, "cap": cap,
}
DATA_DRIVEN = frozenset({"hrank", "chip", "central", "entropy"})
TRAINED = frozenset({"cap"})


def get_criterion(name: str) -> Criterion:
    """The criterion called ``name``; ``ValueError`` naming the choices otherwise."""
    try:
        return CRITERIA[name]
    except KeyError:
        raise ValueError(f"unknown criterion {name!r}; choose one of {', '.join(CRITERIA)}") from None


__all__ = ["CRITERIA", "DATA_DRIVEN", "TRAINED", "Criterion", "LayerView", "TIE_RTOL", "cap", "central", "chip", "clp", "clp_flagged", "entropy",
           "fsm", "get_criterion", "hrank", "l1", "sensitivity"]
