r"""Lottery-jackpot score search (Zhang et al.): find a sparse mask inside frozen weights.

Each prunable site gets a real-valued score per entry, :math:`s`. The forward uses the site's
binary keep-mask :math:`m` (``W ⊙ m`` for a weight, ``w_e m_e`` for an edge weight, ``g_f m_f``
for a feature gate); the backward passes the mask's gradient straight through to the scores,

.. math::
    \frac{\partial L}{\partial s} := \frac{\partial L}{\partial m}
    = \frac{\partial L}{\partial (W \odot m)} \odot W,

so a dead entry, present in the forward at value 0, still learns whether it would help. After
every optimizer step on the scores :func:`swap_to_top` makes the live set the top ``k`` scores
again by exchanging dead entries that score above the ``k``-th score with live entries below it,
in equal numbers: the count of live entries never changes. Scores start at 1 for the entries
magnitude pruning keeps at the target and at ``1 - gap`` for the others
(:func:`initial_scores`), so the search starts from the magnitude mask.

The weights themselves are never written to: callers keep them frozen (no gradient, not in the
optimizer) and multiply by :func:`straight_through` masks in the forward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .engine import MaskEngine


@dataclass(frozen=True)
class ScoreSearchConfig:
    """Optimisation of the scores: SGD with momentum and a cosine learning rate (as the reference code).

    Attributes:
        lr: peak learning rate of the scores.
        momentum: SGD momentum.
        weight_decay: L2 penalty on the scores.
        score_gap: dead entries start at ``1 - score_gap``, live ones at 1.
    """

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    score_gap: float = 0.01

    def __post_init__(self) -> None:
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"score lr must be > 0, got {self.lr}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"score momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"score weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 < self.score_gap < 1.0:
            raise ValueError(f"score_gap must be in (0, 1), got {self.score_gap}")

    def optimizer(self, scores: list[Tensor]) -> torch.optim.SGD:
        return torch.optim.SGD(scores, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def learning_rate(self, step: int, total: int) -> float:
        r"""Cosine decay from ``lr`` to 0 over ``total`` steps: :math:`\eta \tfrac{1}{2}(1 + \cos(\pi t / T))`."""
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(step / max(total, 1), 1.0)))


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores: Tensor, mask: Tensor) -> Tensor:
        return mask.to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def straight_through(scores: Tensor, mask: Tensor) -> Tensor:
    """The binary ``mask`` as a float tensor whose gradient flows unchanged into ``scores``.

    Args:
        scores: float, any shape.
        mask: bool, the same shape.
    Returns:
        ``mask.float()``, with :math:`\\partial/\\partial\\,\\text{scores} = \\partial/\\partial\\,\\text{mask}`.
    """
    if scores.shape != mask.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and mask {tuple(mask.shape)} differ in shape")
    return _StraightThrough.apply(scores, mask)


def initial_scores(keep: Tensor, gap: float = ScoreSearchConfig.score_gap) -> Tensor:
    """Float32 scores: 1 where ``keep`` (bool), ``1 - gap`` elsewhere."""
    return torch.where(keep.bool(), torch.ones((), dtype=torch.float32), torch.tensor(1.0 - gap))


def swap_count(scores: Tensor, mask: Tensor) -> int:
    r"""How many (dead, live) pairs :func:`swap_to_top` exchanges.

    With dead scores sorted descending :math:`d_1 \ge d_2 \ge \dots` and live scores ascending
    :math:`l_1 \le l_2 \le \dots`, the count is :math:`n = |\{i : d_i > l_i\}|` (a prefix, as
    :math:`d_i - l_i` decreases). After the swap every live score is at least every dead one:
    the live set is a top-``k`` set. A dead entry only displaces a live one it strictly beats, so
    equal scores never swap.
    """
    flat_scores, flat_mask = scores.detach().reshape(-1), mask.reshape(-1).bool()
    dead = torch.sort(flat_scores[~flat_mask], descending=True).values
    live = torch.sort(flat_scores[flat_mask]).values
    n = min(dead.numel(), live.numel())
    return int((dead[:n] > live[:n]).sum())


def swap_to_top(engine: MaskEngine, name: str, scores: Tensor) -> tuple[Tensor, Tensor]:
    """Exchange the ``n`` (:func:`swap_count`) highest-scoring dead entries of site ``name`` with its
    ``n`` lowest-scoring live ones; ties within each side by index (:meth:`MaskEngine.prune`, :meth:`~MaskEngine.grow`).

    The site's live count is unchanged. Returns ``(killed, revived)`` flat indices.
    """
    n = swap_count(scores, engine.mask(name))
    site = engine.site(name)
    before = site.mask.clone()
    killed = engine.prune(name, n, scores.detach())
    # revive among the entries dead before this swap (the ones just killed are not candidates)
    revived = engine.grow(name, n, scores.detach(), eligible=~before)
    return killed, revived


class ScoreSearch:
    """The scores of some sites of one engine, their optimizer, and the swap after each step.

    Scores start from the engine's current masks (:func:`initial_scores`): prune the sites to
    their targets by magnitude first. Usage, per optimisation step::

        search = ScoreSearch(engine, ["weight:conv1"], ScoreSearchConfig(), total_steps=100)
        loss = loss_fn(W * search.mask("weight:conv1"))   # frozen W, straight-through mask
        loss.backward()
        search.step()                                     # SGD on the scores, then swap_to_top per site

    Args:
        engine: holds the sites' masks; :meth:`step` changes them in place.
        names: the searched sites.
        config: optimisation of the scores.
        total_steps: length of the cosine learning-rate schedule.
    """

    def __init__(self, engine: MaskEngine, names: list[str], config: ScoreSearchConfig, total_steps: int) -> None:
        self.engine = engine
        self.config = config
        self.total_steps = total_steps
        self.steps = 0
        self.scores = {name: torch.nn.Parameter(initial_scores(engine.mask(name), config.score_gap))
                       for name in names}
        self.optimizer = config.optimizer(list(self.scores.values()))
        self.swaps = {name: 0 for name in names}

    def mask(self, name: str) -> Tensor:
        """Float keep-mask of site ``name`` (its shape), gradient straight through to its scores."""
        return straight_through(self.scores[name], self.engine.mask(name))

    def parametrization(self, name: str) -> torch.nn.Module:
        """A module mapping a weight ``W`` to ``W * mask(name)``, for
        :func:`torch.nn.utils.parametrize.register_parametrization`: the forward sees the masked
        weight, the parameter itself is never written."""
        return _MaskedBy(self, name)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> dict[str, int]:
        """One SGD step on the scores (cosine learning rate), then :func:`swap_to_top` on every site.

        Returns the number of pairs swapped per site.
        """
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.learning_rate(self.steps, self.total_steps)
        self.optimizer.step()
        self.steps += 1
        swapped = {}
        for name, scores in self.scores.items():
            killed, _ = swap_to_top(self.engine, name, scores)
            swapped[name] = int(killed.numel())
            self.swaps[name] += swapped[name]
        return swapped


class _MaskedBy(torch.nn.Module):
    def __init__(self, search: ScoreSearch, name: str) -> None:
        super().__init__()
        self.search = search
        self.name = name

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.search.mask(self.name)
