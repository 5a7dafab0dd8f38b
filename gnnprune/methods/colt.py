r"""COLT: collaborative lottery tickets over disjoint halves of the classes (reference code
ismail31416/COLT), on graphs.

Two copies of one initialisation train on disjoint halves of the classes, each with its own
head: copy :math:`h` sees the training nodes of its classes :math:`C_h` and the logits of those
classes only (its head is the class columns of the output weight). Each round, from the
masks the previous round left:

1. both copies are rewound to the initial weights and train ``round_epochs`` epochs, edges and
   features under learned soft masks with an L1 penalty as in UGS's rounds (weights plain; the
   masks start at 1 with UGS's relative noise, the same for both copies);
2. each copy picks the keep-masks magnitude pruning would set at the round's level (weights by
   :math:`|w|`, edges by :math:`|m_e|`, features by :math:`|g_f|`, as UGS ranks them);
3. the new mask is their intersection :math:`M = M_A \wedge M_B`. An intersection keeps fewer
   entries than the level asks; the rest are topped up from the other live entries, highest
   mean score of the two copies first, so every round ends at the exact counts of
   :meth:`UGSConfig.schedule` (the round's record says how many were topped up). The head
   (:func:`head_weights`) is not intersected: entry :math:`(i, c)` of an output weight belongs
   to the copy that owns class :math:`c` and is ranked by that copy's :math:`|w_{ic}|`.

The rounds follow UGS's schedule (its rates, L1 coefficients and ``round_epochs``); the
ticket, the rewound initial weights under the final masks, then trains on all classes.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from ..copruning import EDGES, FEATURES, WEIGHT_PREFIX, CoPruner, EdgeRanking, PruneTargets
from ..data import GraphData
from ..masks import WeightDistribution
from ..nn import GraphModel
from ..training import TrainConfig, train
from .base import Fitted
from .ugs import UGSConfig, UGSRound, perturb_soft_masks, rewind, walk_levels


class COLTRound(UGSRound):
    """Hooks of one copy's round: UGS's L1 penalty on the learned edge masks and feature gates
    (no soft weight masks: the weights are ranked by magnitude)."""

    name = "colt"

    def __init__(self, config: UGSConfig) -> None:
        super().__init__(dataclasses.replace(config, early_bird=None), weight_masks={})


class ClassSubset(GraphModel):
    """A view of ``model`` that outputs the logits of ``classes`` only (``[N, len(classes)]``).

    It shares ``model``'s parameters and delegates everything a pruner and the training loop
    ask of a model, under ``model``'s own parameter names, so masks fit both.
    """

    def __init__(self, model: GraphModel, classes: Tensor) -> None:
        super().__init__()
        self.inner = model
        self.classes = classes.clone()
        self.input_weight_names = model.input_weight_names
        self.uses_edge_weight = model.uses_edge_weight

    def forward(self, x, graph):
        return self.inner(x, graph).index_select(-1, self.classes)

    def prunable_weights(self):
        return self.inner.prunable_weights()

    def weight_layout(self, name: str):
        return self.inner.weight_layout(name)

    def weight_owner(self, name: str):
        return self.inner.weight_owner(name)

    def param_groups(self, weight_decay: float) -> list[dict]:
        return self.inner.param_groups(weight_decay)

    def hidden_units(self):
        return self.inner.hidden_units()


def class_halves(num_classes: int) -> tuple[Tensor, Tensor]:
    """The two disjoint halves of ``range(num_classes)``: the first ``num_classes // 2`` classes
    and the rest."""
    if num_classes < 2:
        raise ValueError(f"colt splits the classes in two halves: needs >= 2 classes, got {num_classes}")
    classes = torch.arange(num_classes)
    return classes[: num_classes // 2], classes[num_classes // 2:]


def class_half_data(data: GraphData, classes: Tensor) -> GraphData:
    """``data`` restricted to the nodes of ``classes``: their train / val / test nodes only,
    labels renumbered ``0 .. len(classes) - 1`` in the order of ``classes``."""
    if data.task != "multiclass":
        raise ValueError(f"colt splits classes: {data.name} is a {data.task} task")
    member = torch.isin(data.y, classes)
    relabel = torch.zeros(data.num_classes, dtype=torch.long)
    relabel[classes] = torch.arange(classes.numel())
    return dataclasses.replace(data, y=relabel[data.y], train_mask=data.train_mask & member,
                               val_mask=data.val_mask & member, test_mask=data.test_mask & member,
                               num_classes=int(classes.numel()))


def head_weights(model: GraphModel, num_classes: int) -> list[str]:
    """The class output weights: the trailing run of prunable weights (in model order) whose
    output axis has ``num_classes`` entries (GCN: the last layer's weight; GAT: its weight and
    attention vectors; SAGE: its root and neighbour weights)."""
    names = list(model.prunable_weights())
    sizes = [model.prunable_weights()[name].size(model.weight_layout(name).output_axis) for name in names]
    heads = []
    for name, size in zip(reversed(names), reversed(sizes)):
        if size != num_classes:
            break
        heads.insert(0, name)
    if not heads:
        raise ValueError(f"{type(model).__name__}: its last prunable weight does not have {num_classes} outputs; "
                         "colt gives each half of the classes its own head")
    if len(heads) == len(names) and len(names) > 1:
        raise ValueError(f"{type(model).__name__}: every prunable weight has {num_classes} outputs, so the head "
                         "cannot be told apart (choose a hidden width other than the number of classes)")
    return heads


def intersect(keeps: list[dict[str, Tensor]], scores: list[dict[str, Tensor]], owners: dict[str, Tensor]
              ) -> dict[str, Tensor]:
    """Scores whose pruning keeps the intersection of the copies' keep-masks first.

    Entries every copy keeps score :math:`+\\infty`; the others the mean of the copies' scores (the
    order in which a top-up adds them back). A site in ``owners`` (the head) is not intersected:
    ``owners[site]`` is a long tensor shaped like the site, the copy each entry belongs to, whose
    score it takes.

    Args:
        keeps: per copy, site -> bool keep-mask.
        scores: per copy, site -> the score it ranked the site's entries by.
        owners: site -> copy index per entry, for the sites not intersected.
    """
    merged = {}
    for site in keeps[0]:
        stacked = torch.stack([s[site].float() for s in scores])
        if site in owners:
            merged[site] = stacked.gather(0, owners[site].unsqueeze(0)).squeeze(0)
            continue
        both = torch.stack([k[site] for k in keeps]).all(0)
        merged[site] = torch.where(both, torch.tensor(float("inf")), stacked.mean(0))
    return merged


def fit_colt(model: GraphModel, data: GraphData, targets: PruneTargets, config: UGSConfig,
             train_config: TrainConfig, progress: bool = True, should_stop=None,
             distribution: WeightDistribution = WeightDistribution.UNIFORM) -> Fitted:
    """Run COLT to ``targets`` on UGS's rounds (``config``: rates, L1 coefficients, round epochs;
    its early bird is not used), then train the ticket on all classes. The returned cost counts
    every epoch of both copies in every round, and the ticket's run; ``result.updates`` has one
    record per round (its targets, each copy's selected epoch and scores, and per part the size
    of the intersection and how many entries were topped up to reach the level exactly).
    ``distribution`` spreads each round's weight level over the weight tensors, for both copies'
    picks and the top-up, as in UGS's rounds."""
    return fit_colt_levels(model, data, [targets], config, train_config, progress, should_stop, distribution)[0]


def fit_colt_levels(model: GraphModel, data: GraphData, levels: list[PruneTargets], config: UGSConfig,
                    train_config: TrainConfig, progress: bool = True, should_stop=None,
                    distribution: WeightDistribution = WeightDistribution.UNIFORM) -> list[Fitted]:
    """One COLT trajectory through increasing sparsity ``levels``; a ticket trained on all classes
    at each, as :func:`~gnnprune.methods.ugs.fit_ugs_levels` does for UGS (the same rounds, so
    COLT and UGS meet each level with equal round counts). A level's cost counts both copies'
    epochs in every round up to it plus its own ticket run."""
    halves = class_halves(data.num_classes)
    heads = head_weights(model, data.num_classes)

    def colt_round(initial, masks, sparsity, round_config, round_index):
        keeps, scores, copies, epochs, seconds = [], [], [], 0, 0.0
        for classes in halves:
            result, keep, score = _copy_round(model, data, classes, initial, masks, sparsity, config, round_config,
                                              progress, should_stop, distribution, round_index)
            keeps.append(keep)
            scores.append(score)
            copies.append({"classes": classes.tolist(), "best_epoch": result.best_epoch, "val": result.val,
                           "test": result.test, "epochs": result.epochs_run})
            epochs += result.epochs_run
            seconds += result.train_time_s
        merged = rewind(model, data, initial, masks, weight_distribution=distribution)
        owners = {WEIGHT_PREFIX + head: _head_owner(merged, head, halves) for head in heads}
        before = {site.name: site.mask.clone() for site in merged.engine}
        report = merged.update(sparsity, prune_scores=intersect(keeps, scores, owners), edge_ranking=EdgeRanking.GLOBAL)
        record = {"targets": vars(sparsity), "copies": copies, "sites": report,
                  "intersection": _intersection_report(merged, keeps, before, heads)}
        return epochs, seconds, record, merged.engine.state_dict()

    return walk_levels(model, data, levels, config, train_config, colt_round, progress, should_stop, distribution)


def _copy_round(model, data, classes, initial, masks, sparsity, config, round_config, progress, should_stop,
                distribution, round_index):
    """One copy's round: rewind, train on ``classes`` with learned edge masks and feature gates;
    returns its training result, the keep-masks it would prune to (site -> mask) and its scores."""
    model.load_state_dict(initial)
    view = ClassSubset(model, classes)
    half = class_half_data(data, classes)
    pruner = rewind(view, half, None, masks, learn_edge_weights=True, learn_feature_gates=True,
                    edge_init_logit=1.0, edge_activation=torch.abs, weight_distribution=distribution)
    if pruner.edge_logit is None:
        raise ValueError(f"{type(model).__name__} does not use edge weights: colt learns an edge mask")
    # both copies start from the same perturbed masks, as from the same initial weights
    perturb_soft_masks([pruner.edge_logit, pruner.feature_gate], config.mask_noise,
                       seed=round_config.seed, round_index=round_index)
    result = train(view, half, pruner, COLTRound(config), round_config, progress=progress, should_stop=should_stop)
    scores = {WEIGHT_PREFIX + name: param.detach().abs().clone() for name, param in pruner.weights.items()}
    scores[FEATURES] = pruner.feature_gate.detach().abs().clone()
    scores[EDGES] = pruner.edge_weight().detach().clone()
    picked = pruner.pick_engine(sparsity, prune_scores=scores, edge_ranking=EdgeRanking.GLOBAL)
    return result, {site.name: site.mask.clone() for site in picked}, scores


def _head_owner(pruner: CoPruner, head: str, halves: tuple[Tensor, Tensor]) -> Tensor:
    """Copy index (0 or 1) of every entry of the head weight, by the class of its output column."""
    param = pruner.weights[head]
    axis = pruner.layouts[head].output_axis
    by_class = torch.zeros(param.size(axis), dtype=torch.long)
    by_class[halves[1]] = 1
    shape = [1] * param.dim()
    shape[axis] = -1
    return by_class.view(shape).expand(param.shape).contiguous()


def _intersection_report(pruner: CoPruner, keeps, before: dict[str, Tensor], heads: list[str]) -> dict[str, dict]:
    """Per part: entries alive at the round's start, kept by both copies, kept in the end, and
    topped up (kept though not by both); the head, not intersected, on its own."""
    parts = {"weights": [WEIGHT_PREFIX + name for name in pruner.weights if name not in heads], "edges": [EDGES],
             "features": [FEATURES], "head": [WEIGHT_PREFIX + name for name in heads]}
    report = {}
    for part, sites in parts.items():
        both = [torch.stack([k[site] for k in keeps]).all(0) for site in sites]
        after = [pruner.engine.mask(site) for site in sites]
        report[part] = {"start": sum(int(before[site].sum()) for site in sites),
                        "intersection": sum(int(b.sum()) for b in both),
                        "kept": sum(int(a.sum()) for a in after),
                        "topped_up": sum(int((a & ~b).sum()) for a, b in zip(after, both))}
    return report
