r"""Early-bird detection: stop dense training once the mask pruning would pick has settled.

You et al. (ICLR'20, "Drawing early-bird tickets") observe that the mask magnitude pruning would
pick stabilises early in training; GEBT (You et al., AAAI'22) applies the test to GNNs, to the
weight and graph masks together. Each epoch the monitor receives, per part (``weights``,
``edges``, ``features``), the keep-mask pruning *would* pick at the run's targets; it keeps the
last ``window`` of them. With :math:`m_t` the newest mask of a part, the part has settled when

.. math::
    \max_{1 \le k < w} d(m_t, m_{t-k}) \le \tau,
    \qquad d(a, b) = \frac{1}{n} \sum_{i=1}^{n} [a_i \ne b_i]

(the normalised Hamming distance of the newest mask to each of the previous :math:`w - 1`, as
GEBT). The monitor fires at the first epoch at which the window is full and every part has settled
(and, optionally, at least ``min_epochs`` epochs have been trained).

An iterative method (a UGS round) prunes a small share of the entries still alive, from masks
that earlier rounds fixed: over all :math:`n` entries its masks differ little whatever the round
decides. Given the keep-masks :math:`r` in force when the round started, the monitor measures the
round's own decision instead, the pruned sets :math:`P = r \wedge \neg m`:

.. math::
    d_r(a, b) = \frac{|a \oplus b|}{|r \wedge \neg a| + |r \wedge \neg b|}
              = \frac{|P_a \,\triangle\, P_b|}{|P_a| + |P_b|}

(0 when both prune nothing): 0 when the two decisions agree, 1 when they prune disjoint sets,
whatever the share of entries the round prunes.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class EarlyBirdConfig:
    """Attributes:
        window: masks compared, the newest included (>= 2).
        threshold: largest normalised Hamming distance between the newest mask and each of the
            previous ``window - 1`` for a part to count as settled, in ``[0, 1]``.
        min_epochs: epochs trained before the monitor may fire (>= 0; it fires at the first
            observed epoch ``e`` with ``e + 1 >= min_epochs`` whose window has settled). Masks
            that start from scores an earlier stage fixed (a UGS round's carried-over soft masks)
            look settled before they had a chance to move; a floor makes every stage learn.
    """

    window: int = 5
    threshold: float = 0.1
    min_epochs: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 2:
            raise ValueError(f"early-bird window must be an integer >= 2, got {self.window}")
        if not isinstance(self.threshold, (int, float)) or not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"early-bird threshold must be in [0, 1], got {self.threshold}")
        if isinstance(self.min_epochs, bool) or not isinstance(self.min_epochs, int) or self.min_epochs < 0:
            raise ValueError(f"early-bird min_epochs must be an integer >= 0, got {self.min_epochs}")


def decision_distance(a: Tensor, b: Tensor, start: Tensor) -> float:
    """Distance of two pruning decisions taken from the keep-mask ``start``: the share of the
    entries either prunes that only one of them prunes (0 when neither prunes any). ``a`` and
    ``b`` keep a subset of ``start``'s entries; all three are bool masks of one shape."""
    if not a.shape == b.shape == start.shape:
        raise ValueError(f"masks differ in shape: {tuple(a.shape)}, {tuple(b.shape)}, {tuple(start.shape)}")
    a, b, start = a.bool(), b.bool(), start.bool()
    if bool((a & ~start).any()) or bool((b & ~start).any()):
        raise ValueError("a decision keeps entries that were already pruned")
    pruned = int((start & ~a).sum()) + int((start & ~b).sum())
    return 0.0 if pruned == 0 else float((a != b).sum()) / pruned


def mask_distance(a: Tensor, b: Tensor) -> float:
    """Normalised Hamming distance of two bool masks of the same shape: the fraction of entries
    that differ (0 for empty masks)."""
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {tuple(a.shape)} != {tuple(b.shape)}")
    if a.numel() == 0:
        return 0.0
    return float((a.bool() != b.bool()).sum()) / a.numel()


class EarlyBird:
    """Watches a sequence of per-part masks and fires once every part has settled.

    Example::

        monitor = EarlyBird(EarlyBirdConfig(window=3, threshold=0.0))
        for epoch, masks in enumerate(sequence):
            if monitor.observe(epoch, masks):
                break            # monitor.fired_epoch == epoch

    Args:
        config: window and threshold.
        start: per part, the keep-mask in force before the decision (an iterative round's
            start masks): the distance is then :func:`decision_distance` from it; ``None``:
            :func:`mask_distance` over all entries.

    Attributes:
        fired_epoch: the epoch whose observation fired the monitor (``None`` until then).
        distances: per observed epoch, ``{"epoch": e, part: max distance over the window ...}``,
            once the window is full.
    """

    def __init__(self, config: EarlyBirdConfig, start: dict[str, Tensor] | None = None) -> None:
        self.config = config
        self.start = None if start is None else {part: mask.detach().bool().clone() for part, mask in start.items()}
        self.fired_epoch: int | None = None
        self.distances: list[dict] = []
        self._window: deque[dict[str, Tensor]] = deque(maxlen=config.window)

    @property
    def fired(self) -> bool:
        return self.fired_epoch is not None

    def observe(self, epoch: int, masks: dict[str, Tensor]) -> bool:
        """Add the masks of ``epoch`` (part -> bool tensor); returns whether the monitor has fired.

        After firing, further observations are ignored (it stays fired at its epoch).
        """
        if self.fired:
            return True
        if self._window and set(masks) != set(self._window[-1]):
            raise ValueError(f"parts changed between observations: {sorted(self._window[-1])} -> {sorted(masks)}")
        self._window.append({part: mask.detach().bool().clone() for part, mask in masks.items()})
        if len(self._window) < self.config.window:
            return False
        if self.start is not None and set(masks) != set(self.start):
            raise ValueError(f"parts differ from the start masks': {sorted(self.start)} -> {sorted(masks)}")
        newest = self._window[-1]
        worst = {part: max(self._distance(part, mask, older[part]) for older in list(self._window)[:-1])
                 for part, mask in newest.items()}
        self.distances.append({"epoch": epoch, **worst})
        settled = all(distance <= self.config.threshold for distance in worst.values())
        if settled and epoch + 1 >= self.config.min_epochs:
            self.fired_epoch = epoch
        return self.fired

    def _distance(self, part: str, a: Tensor, b: Tensor) -> float:
        return mask_distance(a, b) if self.start is None else decision_distance(a, b, self.start[part])

    def record(self, dense_epochs: int) -> dict:
        """What a run's metrics keep: settings, the epoch it fired (``None``: never) and the
        dense epochs saved out of ``dense_epochs`` (the observation of epoch ``e`` ends the dense
        phase after ``e + 1`` epochs)."""
        saved = 0 if self.fired_epoch is None else dense_epochs - (self.fired_epoch + 1)
        return {"window": self.config.window, "threshold": self.config.threshold, "min_epochs": self.config.min_epochs,
                "distance": "all entries" if self.start is None else "round decision", "fired_epoch": self.fired_epoch,
                "dense_epochs": dense_epochs, "epochs_saved": saved, "distances": list(self.distances)}

    def state_dict(self) -> dict:
        """Tensors and plain containers (``torch.load(weights_only=True)``-safe)."""
        return {"fired_epoch": self.fired_epoch, "distances": [dict(d) for d in self.distances],
                "window": [{part: mask.clone() for part, mask in masks.items()} for masks in self._window]}

    def load_state_dict(self, state: dict) -> None:
        self.fired_epoch = state["fired_epoch"]
        self.distances = [dict(d) for d in state["distances"]]
        self._window = deque(({part: torch.as_tensor(mask).bool().clone() for part, mask in masks.items()}
                              for masks in state["window"]), maxlen=self.config.window)
