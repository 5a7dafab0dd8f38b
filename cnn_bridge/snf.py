r"""SNF, searching the number of filters (Liu et al., 2021): how many output channels each
prunable layer keeps under a MAC budget is *searched* on a validation split; which channels go
is then decided by any criterion's scores (:mod:`cnn_bridge.criteria`). It sits beside the
uniform allocation (:func:`cnn_bridge.allocation.uniform_fraction_for`) and the sensitivity one.

The paper's search procedure has no public code; this one is built from its description, with
these choices:

- **Search space.** A candidate is a positive weight :math:`\pi_l` per layer; layer ``l`` keeps
  :math:`k_l = \min(C_l, \max(1, \lfloor \alpha \pi_l C_l \rfloor))` channels, with the largest
  :math:`\alpha` (bisection) whose MACs are within the budget. So every candidate meets the
  budget, and :math:`\pi = 1` is the uniform allocation.
- **Exact budget.** A candidate's counts are then *filled*: while some layer can keep one more
  channel without exceeding the budget, the one whose extra channel costs most MACs gets it (ties:
  model order). A filled allocation leaves no room for any single channel, so its MACs are at most
  :math:`(1 - r)` times the dense MACs and within one channel's cost of it.
- **Search.** An evolutionary search: generation 0 is the uniform allocation plus random
  candidates :math:`\log \pi_l \sim \mathcal{N}(0, \sigma^2)`; each next generation keeps the
  ``elites`` best and fills up with their mutations :math:`\log \pi'_l = \log \pi_l + \mathcal{N}(0, (\sigma/2)^2)`.
  The uniform allocation is always evaluated, so on the validation split the search never ends
  worse than it.
- **Evaluation.** A candidate is scored by the validation cross-entropy of the model with the
  candidate's channels masked (lowest criterion scores pruned, no fine-tuning), after the batch
  norm statistics are re-estimated under the masks on a few training images (EagleEye's adaptive
  batch norm; without it, the accuracy of unfine-tuned pruned models barely ranks them). Lower is
  better; equal losses keep the earlier candidate.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnnprune.masks import relative_tolerance, tie_order

from .allocation import MacModel
from .compact import PrunableLayer
from .criteria import TIE_RTOL
from .train import reestimate_batch_norm


@dataclass(frozen=True)
class SNFConfig:
    """The filter-count search.

    Attributes:
        population: candidates per generation (the first generation includes the uniform one).
        generations: search generations.
        elites: best candidates kept from one generation to the next.
        sigma: spread of :math:`\\log \\pi_l` in generation 0 (mutations use ``sigma / 2``).
        validation_images: held-out training images a candidate's loss is measured on.
        calibration_images: training images the batch norm statistics are re-estimated on.
        seed: seeds the random candidates.
    """

    population: int = 8
    generations: int = 3
    elites: int = 2
    sigma: float = 0.4
    validation_images: int = 256
    calibration_images: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.population < 1 or self.generations < 1 or not 1 <= self.elites <= self.population:
            raise ValueError(f"need population >= 1, generations >= 1, 1 <= elites <= population; got {self}")
        if self.sigma < 0 or self.validation_images < 1 or self.calibration_images < 1:
            raise ValueError(f"need sigma >= 0 and at least one validation and calibration image; got {self}")


def counts_for_weights(macs: MacModel, weights: dict[str, float], target: float, steps: int = 40) -> dict[str, int]:
    """Kept channels per layer for weights :math:`\\pi`: the largest :math:`\\alpha` within ``target`` MACs, then filled.

    Raises:
        ValueError: if one channel per layer already exceeds ``target``.
    """
    at = lambda a: {n: min(c, max(1, math.floor(a * weights[n] * c + 1e-9))) for n, c in macs.channels.items()}  # noqa: E731
    if macs.macs(at(0.0)) > target:
        raise ValueError(f"keeping one channel per layer needs {macs.macs(at(0.0))} MACs, over the target {target:.0f}")
    low, high = 0.0, 1.0 / min(weights.values())
    for _ in range(steps):
        mid = (low + high) / 2
        low, high = (mid, high) if macs.macs(at(mid)) <= target else (low, mid)
    return fill(macs, at(low), target)


def fill(macs: MacModel, kept: dict[str, int], target: float) -> dict[str, int]:
    """Add channels while the budget allows: each time to the layer whose next channel costs the most
    MACs and still fits (ties: model order). Afterwards no single channel fits."""
    kept = dict(kept)
    current = macs.macs(kept)
    while True:
        best, best_cost = None, -1
        for name, c in macs.channels.items():
            if kept[name] >= c:
                continue
            cost = macs.macs({**kept, name: kept[name] + 1}) - current
            if current + cost <= target and cost > best_cost:
                best, best_cost = name, cost
        if best is None:
            return kept
        kept[best] += 1
        current += best_cost


def keep_counts(scores: dict[str, Tensor], kept: dict[str, int]) -> dict[str, Tensor]:
    """Bool keep-masks with the ``kept[l]`` highest-scoring channels of each layer (ties as in
    :func:`~cnn_bridge.allocation.keep_lowest_pruned`: the lower index is pruned first)."""
    masks = {}
    for name, s in scores.items():
        values = s.detach().double()
        order = tie_order(values, relative_tolerance(values, TIE_RTOL))
        keep = torch.ones(values.numel(), dtype=torch.bool)
        keep[order[:values.numel() - kept[name]]] = False
        masks[name] = keep
    return masks


@contextmanager
def masked_channels(model: nn.Module, layers: Sequence[PrunableLayer], keep: dict[str, Tensor]):
    """Within the block, each prunable layer's dead channels output zero (forward hooks on the batch
    norm, or the conv without one); the model's parameters are untouched."""
    handles = []
    for layer in layers:
        live = keep[layer.conv].float().view(1, -1, 1, 1)
        module = model.get_submodule(layer.bn or layer.conv)
        handles.append(module.register_forward_hook(lambda m, i, o, live=live: o * live))
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def adaptive_bn_loss(model: nn.Module, layers: Sequence[PrunableLayer], keep: dict[str, Tensor],
                     calibration: Sequence[Tensor], validation: Sequence[tuple[Tensor, Tensor]]) -> float:
    """Validation cross-entropy under ``keep`` after re-estimating batch-norm statistics on ``calibration``
    (normalised batches); the model's batch-norm buffers are restored afterwards."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    try:
        with masked_channels(model, layers, keep):
            reestimate_batch_norm(model, calibration)
            total, count = 0.0, 0
            for images, labels in validation:
                total += float(F.cross_entropy(model(images), labels, reduction="sum"))
                count += len(labels)
        return total / count
    finally:
        for m, (mean, var, tracked) in zip(norms, saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(tracked)


def snf_allocate(macs: MacModel, scores: dict[str, Tensor], reduction: float,
                 loss: Callable[[dict[str, Tensor]], float], config: SNFConfig = SNFConfig(),
                 progress: bool = False) -> tuple[dict[str, Tensor], dict]:
    """Search per-layer kept counts within ``(1 - reduction)`` of the dense MACs.

    Args:
        macs: the model's MAC model.
        scores: ``{conv name: criterion scores [C]}``; the lowest are pruned within a layer.
        loss: validation loss of a keep-mask dict (lower is better), e.g. :func:`adaptive_bn_loss`.
    Returns:
        ``(keep masks, trace)``: the best candidate's masks and ``{"kept", "loss", "uniform_loss",
        "evaluated", "macs", "target"}``.
    """
    from tqdm.auto import tqdm

    target = (1.0 - reduction) * macs.macs()
    names = list(macs.channels)
    generator = torch.Generator().manual_seed(config.seed)
    evaluated: list[tuple[float, dict[str, int]]] = []
    cache: dict[tuple[int, ...], float] = {}

    def evaluate(log_weights: Tensor) -> tuple[float, dict[str, int]]:
        kept = counts_for_weights(macs, dict(zip(names, log_weights.exp().tolist())), target)
        key = tuple(kept[n] for n in names)
        if key not in cache:
            cache[key] = loss(keep_counts(scores, kept))
        evaluated.append((cache[key], kept))
        return cache[key], kept

    population = [torch.zeros(len(names), dtype=torch.float64)]
    population += [config.sigma * torch.randn(len(names), generator=generator, dtype=torch.float64)
                   for _ in range(config.population - 1)]
    bar = tqdm(total=config.population * config.generations, desc="snf search", disable=not progress, leave=False)
    ranked: list[tuple[float, int, Tensor, dict[str, int]]] = []
    for generation in range(config.generations):
        for candidate in population:
            value, kept = evaluate(candidate)
            ranked.append((value, len(ranked), candidate, kept))
            bar.update(1)
        ranked.sort(key=lambda item: (item[0], item[1]))
        ranked = ranked[:config.elites]
        if generation + 1 < config.generations:
            population = [ranked[i % len(ranked)][2] + config.sigma / 2 * torch.randn(len(names), generator=generator,
                                                                                     dtype=torch.float64)
                          for i in range(config.population)]
    bar.close()
    best_loss, _, _, best = ranked[0]
    trace = {"kept": best, "loss": best_loss, "uniform_loss": evaluated[0][0], "evaluated": len(cache),
             "macs": macs.macs(best), "target": target}
    return keep_counts(scores, best), trace
