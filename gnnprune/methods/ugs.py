"""UGS: Unified GNN Sparsification (Chen et al., ICML 2021), graph lottery tickets on sparse ops.

Each round trains the model together with soft masks on edges, features and weights under an
L1 penalty, then prunes a fixed fraction of the remaining entries with the smallest mask
values and rewinds the weights to their initialisation. The masks start every round at 1 with
a relative noise of 1e-5, as in the reference, so that masks the loss never moves do not stay
tied (a tie would be pruned in index order). When every part has reached its
target, the ticket (rewound weights, binary masks) is trained once more; that run is the
result. The reference implementation multiplies a dense ``N x N`` adjacency by a dense mask;
here the edge mask is one value per kept undirected edge inside the sparse operator, so a
round costs what a training run on the kept graph costs.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..copruning import EDGES, FEATURES, WEIGHT_PREFIX, CoPruner, EdgeRanking, PruneTargets
from ..data import GraphData
from ..masks import EarlyBird, EarlyBirdConfig, WeightDistribution
from ..nn import GraphModel
from ..training import TrainConfig, train
from .base import Fitted
from .dense import Dense, FixedMasks


@dataclass(frozen=True)
class UGSConfig:
    """Rates and penalties of UGS.

    Attributes:
        edge_rate: fraction of the remaining edges pruned per round (paper: 0.05).
        weight_rate: fraction of the remaining weights pruned per round (paper: 0.2), over all
            weights together or per tensor, as the run's weight distribution spreads them.
        feature_rate: fraction of the remaining feature columns pruned per round (UGS prunes no
            features; ours prunes them like weights so that all methods reach the same targets).
        edge_l1, weight_l1, feature_l1: L1 coefficients on the soft masks (paper: 1e-2).
        round_epochs: training epochs per round and for the final ticket (default: the run's).
        early_bird: end each round's mask learning once the masks its pruning would pick have
            settled (:class:`~gnnprune.masks.EarlyBirdConfig`); ``None``: every round trains
            ``round_epochs``. The ticket's final run always trains in full.
        mask_noise: every round starts each soft mask at :math:`1 + u`, :math:`u \\sim U(-c, c)`
            relative (the reference's 1e-5; see :func:`perturb_soft_masks`); 0: exactly 1.
    """

    edge_rate: float = 0.05
    weight_rate: float = 0.2
    feature_rate: float = 0.2
    edge_l1: float = 1e-2
    weight_l1: float = 1e-2
    feature_l1: float = 1e-2
    round_epochs: int | None = None
    early_bird: EarlyBirdConfig | None = None
    mask_noise: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("edge_rate", "weight_rate", "feature_rate"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        for name in ("edge_l1", "weight_l1", "feature_l1"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.mask_noise < 1.0:
            raise ValueError(f"mask_noise must be in [0, 1), got {self.mask_noise}")
        if self.round_epochs is not None and self.round_epochs < 1:
            raise ValueError(f"round_epochs must be >= 1, got {self.round_epochs}")

    def schedule(self, targets: PruneTargets, start: PruneTargets | None = None) -> list[PruneTargets]:
        """Sparsity reached after each round, from ``start`` (default dense) to ``targets``.

        Every part loses ``rate`` of its remaining entries per round, capped at its target:
        :math:`s_r = \\min(t, 1 - (1 - s_{r-1})(1 - \\text{rate}))`.
        """
        start = start or PruneTargets()
        rates = {"weights": self.weight_rate, "edges": self.edge_rate, "features": self.feature_rate}
        for part in rates:
            if getattr(targets, part) < getattr(start, part):
                raise ValueError(f"{part}: target {getattr(targets, part)} is below the start {getattr(start, part)}")
        steps, current = [], {part: getattr(start, part) for part in rates}
        while any(current[p] < getattr(targets, p) for p in rates):
            current = {p: min(getattr(targets, p), 1 - (1 - current[p]) * (1 - r)) for p, r in rates.items()}
            if all(getattr(targets, p) - current[p] < 1e-12 for p in rates):
                current = vars(targets)  # exact targets, free of floating-point drift
            steps.append(PruneTargets(**current))
        return steps

    def level_schedules(self, levels: list[PruneTargets]) -> list[list[PruneTargets]]:
        """Rounds from each level to the next (levels must grow in every part)."""
        schedules, start = [], PruneTargets()
        for level in levels:
            schedules.append(self.schedule(level, start))
            start = level
        return schedules


class WeightMask(nn.Module):
    """Parametrization :math:`W \\mapsto W \\odot M` with a trainable soft mask ``M`` (init 1)."""

    def __init__(self, shape: torch.Size) -> None:
        super().__init__()
        self.mask = nn.Parameter(torch.ones(shape))

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.mask


def attach_weight_masks(model: GraphModel, names: list[str]) -> dict[str, nn.Parameter]:
    """Put a :class:`WeightMask` on each named weight; returns the mask parameters by weight name."""
    masks = {}
    for name in names:
        module, attr = model.weight_owner(name)
        param = getattr(module, attr)
        parametrize.register_parametrization(module, attr, WeightMask(param.shape))
        masks[name] = module.parametrizations[attr][0].mask
    return masks


def perturb_soft_masks(masks: list[Tensor | None], noise: float, seed: int, round_index: int = 0) -> None:
    """Multiply every soft mask by :math:`1 + u`, :math:`u \\sim U(-\\text{noise}, \\text{noise})`, in place.

    Under the L1 penalty and Adam, the masks the loss leaves alone (weights of rare input
    features, edges far from labelled nodes) all take the same steps and stay exactly tied; a
    ranking would then prune them in index order, whole runs of feature rows and edges at a
    time. UGS's reference adds this noise at the start of every round so that those ties fall
    at random; Adam's steps keep the offsets. ``None`` entries (a part not learned) are skipped.

    Args:
        masks: the soft-mask tensors (parameters: changed without recording gradients).
        noise: relative amplitude (0: unchanged).
        seed, round_index: the run's seed and the round; together they seed the generator that
            draws ``u`` (one stream per round, the same for every method that calls this).
    """
    if noise == 0:
        return
    generator = torch.Generator().manual_seed(seed * 1_000_003 + round_index)
    with torch.no_grad():
        for mask in masks:
            if mask is not None:
                mask.mul_(1 + noise * (2 * torch.rand(mask.shape, generator=generator) - 1))


def detach_weight_masks(model: GraphModel, names: list[str]) -> None:
    """Remove the masks, restoring the plain weight parameters (the same tensor objects)."""
    for name in names:
        module, attr = model.weight_owner(name)
        parametrize.remove_parametrizations(module, attr, leave_parametrized=False)


class UGSRound(Dense):
    """Hooks of one mask-learning round: the L1 penalty on the live soft masks.

    With ``config.early_bird`` and the round's target ``sparsity``, after every epoch an
    :class:`~gnnprune.masks.EarlyBird` monitor observes the masks the round's pruning would pick
    then (:meth:`prune_scores`); the round ends after the epoch it fires. The monitor compares the
    round's own decisions (which of the entries alive at the round's start it would prune,
    :func:`~gnnprune.masks.decision_distance`): entries earlier rounds removed are no evidence
    that this round's choice has settled.
    """

    name = "ugs"

    def __init__(self, config: UGSConfig, weight_masks: dict[str, nn.Parameter],
                 sparsity: PruneTargets | None = None) -> None:
        self.config = config
        self.weight_masks = weight_masks
        self.sparsity = sparsity
        self.monitor: EarlyBird | None = None  # built by on_start, from the round's start masks

    def prune_scores(self, pruner: CoPruner) -> dict[str, Tensor]:
        """Scores the round's pruning ranks by: ``|soft mask|`` of weights, ``|gate|`` of features
        (edges: their ``|mask|``, the pruner's default)."""
        scores = {WEIGHT_PREFIX + name: mask.detach().abs() for name, mask in self.weight_masks.items()}
        scores[FEATURES] = pruner.feature_gate.detach().abs()
        return scores

    def on_start(self, run) -> None:
        if self.config.early_bird is not None and self.sparsity is not None:
            self.monitor = EarlyBird(self.config.early_bird, start=run.pruner.part_masks())

    def finished(self, run, epoch: int) -> bool:
        if self.monitor is None:
            return False
        masks = run.pruner.would_pick(self.sparsity, prune_scores=self.prune_scores(run.pruner),
                                      edge_ranking=EdgeRanking.GLOBAL)
        return self.monitor.observe(epoch, masks)

    def penalty(self, run) -> Tensor:
        pruner: CoPruner = run.pruner
        c = self.config
        edge_weight = pruner.edge_weight()
        total = 0.0 if edge_weight is None else c.edge_l1 * edge_weight[pruner.engine.mask(EDGES)].abs().sum()
        total = total + c.feature_l1 * pruner.feature_gate[pruner.engine.mask(FEATURES)].abs().sum()
        for name, mask in self.weight_masks.items():
            total = total + c.weight_l1 * (mask.abs() * pruner.weight_mask(name)).sum()
        return total


def fit_ugs(model: GraphModel, data: GraphData, targets: PruneTargets, config: UGSConfig,
            train_config: TrainConfig, progress: bool = True, should_stop=None,
            distribution: WeightDistribution = WeightDistribution.UNIFORM) -> Fitted:
    """Run UGS to ``targets``: one mask-learning round per step of :meth:`UGSConfig.schedule`,
    then the ticket's training run. The returned cost counts every epoch of every round.

    ``distribution``: how each round's weight level is spread over the weight tensors (default:
    every tensor at the level); UGS's reference ranks the soft masks of all layers together
    (:attr:`WeightDistribution.GLOBAL`).
    """
    return fit_ugs_levels(model, data, [targets], config, train_config, progress, should_stop, distribution)[0]


def fit_ugs_levels(model: GraphModel, data: GraphData, levels: list[PruneTargets], config: UGSConfig,
                   train_config: TrainConfig, progress: bool = True, should_stop=None,
                   distribution: WeightDistribution = WeightDistribution.UNIFORM) -> list[Fitted]:
    """One UGS trajectory through increasing sparsity ``levels``; a trained ticket at each.

    The rounds are those of running UGS to each level in turn, so the ticket at a level is
    the one a run to that level alone would give; sharing the trajectory saves the rounds of
    the lower levels. A level's cost counts every round up to it plus its own ticket run
    (not the tickets of lower levels). ``should_stop`` is polled after every epoch of every
    training (see :func:`~gnnprune.training.train`); rounds are not checkpointed.
    """
    def ugs_round(initial, masks, sparsity, round_config, round_index):
        result, report, masks, early_bird = _mask_round(model, data, initial, masks, sparsity, config, round_config,
                                                        progress, should_stop, distribution, round_index)
        record = {"targets": vars(sparsity), "best_epoch": result.best_epoch, "val": result.val, "test": result.test,
                  "sites": report, **({} if early_bird is None else {"early_bird": early_bird})}
        return result.epochs_run, result.train_time_s, record, masks

    return walk_levels(model, data, levels, config, train_config, ugs_round, progress, should_stop, distribution)


def walk_levels(model: GraphModel, data: GraphData, levels: list[PruneTargets], config: UGSConfig,
                train_config: TrainConfig, run_round, progress: bool, should_stop,
                distribution: WeightDistribution) -> list[Fitted]:
    """The rounds of :meth:`UGSConfig.level_schedules` through ``levels``, and the ticket at each
    level: the rewound initial weights under that level's masks, trained once with them fixed.

    ``run_round(initial, masks, sparsity, round_config, round_index)`` runs one round from the
    masks the previous round left (an engine state; ``None`` at first) and returns
    ``(epochs, seconds, record, masks)``: its cost, its entry of ``result.updates`` and the
    masks at ``sparsity``. Rounds train ``config.round_epochs`` (default: the training's epochs),
    the learned masks at the model's learning rate. A level's cost counts every round up to it
    plus its own ticket run.
    """
    if config.round_epochs is not None:
        train_config = dataclasses.replace(train_config, epochs=config.round_epochs)
    round_config = dataclasses.replace(train_config, gate_lr=None, edge_gate_lr=None,
                                       feature_gate_lr=None)  # masks learn at the model's rate
    initial = copy.deepcopy(model.state_dict())
    masks: dict | None = None
    rounds, epochs, seconds = [], 0, 0.0
    tickets = []
    for schedule in config.level_schedules(levels):
        for sparsity in schedule:
            round_epochs, round_seconds, record, masks = run_round(initial, masks, sparsity, round_config,
                                                                   len(rounds))
            epochs += round_epochs
            seconds += round_seconds
            rounds.append({"round": len(rounds), **record})
        ticket = rewind(model, data, initial, masks, weight_distribution=distribution)  # binary masks
        result = train(model, data, ticket, FixedMasks(), train_config, progress=progress, should_stop=should_stop)
        result = dataclasses.replace(result, epochs_run=epochs + result.epochs_run,
                                     train_time_s=seconds + result.train_time_s, updates=list(rounds))
        tickets.append(Fitted(result, ticket))
    return tickets


def rewind(model: GraphModel, data: GraphData, initial: dict | None, masks: dict | None,
           **pruner_options) -> CoPruner:
    """Put ``model`` back to its ``initial`` state (``None``: leave it) under ``masks`` (an engine
    state; ``None``: dense); returns the pruner holding them (dead weights zeroed, live ones at
    their initial values)."""
    if initial is not None:
        model.load_state_dict(initial)
    pruner = CoPruner(model, data, **pruner_options)
    if masks is not None:
        pruner.engine.load_state_dict(masks)
        pruner.refresh()
    return pruner


def _mask_round(model, data, initial, masks, sparsity, config, round_config, progress, should_stop, distribution,
                round_index):
    """Rewind, learn soft masks for one run under the L1 penalty, prune to ``sparsity``."""
    pruner = rewind(model, data, initial, masks, learn_edge_weights=True, learn_feature_gates=True,
                    edge_init_logit=1.0, edge_activation=torch.abs, weight_distribution=distribution)
    names = list(pruner.weights)
    weight_masks = attach_weight_masks(model, names)
    perturb_soft_masks([*weight_masks.values(), pruner.edge_logit, pruner.feature_gate], config.mask_noise,
                       seed=round_config.seed, round_index=round_index)
    try:
        method = UGSRound(config, weight_masks, sparsity)
        result = train(model, data, pruner, method, round_config, progress=progress, should_stop=should_stop)
        model.load_state_dict(_without_computed_weights(model, names, result.model_state))
        pruner.load_state_dict(result.pruner_state)
        scores = method.prune_scores(pruner)
        early_bird = None if method.monitor is None else method.monitor.record(round_config.epochs)
        # exact ranking, ties by index (gnnprune.masks.lowest): the masks are training results
        report = pruner.update(sparsity, prune_scores=scores,  # edges: by |mask|, the default
                               edge_ranking=EdgeRanking.GLOBAL)
    finally:
        detach_weight_masks(model, names)
    return result, report, pruner.engine.state_dict(), early_bird


def _without_computed_weights(model: GraphModel, names: list[str], state: dict) -> dict:
    """``state`` without the masked weights' computed values, which some layers (PyG's ``Linear``)
    save under the plain weight name beside the parametrization's own entries."""
    paths = {id(module): path for path, module in model.named_modules()}
    computed = set()
    for name in names:
        module, attr = model.weight_owner(name)
        computed.add(f"{paths[id(module)]}.{attr}" if paths[id(module)] else attr)
    return {key: value for key, value in state.items() if key not in computed}
