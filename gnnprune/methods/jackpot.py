r"""Lottery jackpots (Zhang et al.) for GNNs: a sparse mask found inside a trained dense model's frozen weights.

A dense model is trained (with learned edge weights and feature gates, so that edges and
features have a magnitude) or taken from a finished run. Every part with a target above 0 is
then pruned by magnitude, as one-shot pruning does, and :class:`~gnnprune.masks.ScoreSearch`
moves the masks: each epoch is one full-batch forward with all weights, edges and features
present, multiplied by their straight-through masks

.. math::
    \hat{y} = f\big(X \operatorname{diag}(g \odot m_F),\; A(w_E \odot m_E);\; W \odot m_W\big),

one SGD step on the scores and a swap per site that keeps every site's live count exact. The
weights ``W``, edge weights ``w_E`` and gates ``g`` never change. The epoch with the best
validation score is selected. A short fine-tune of the kept weights under the found masks is
optional (off by default).
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from ..copruning import EDGES, FEATURES, WEIGHT_PREFIX, CoPruner, EdgeRanking, FeatureScore, PruneTargets
from ..data import GraphData
from ..graph import MaskedGraph
from ..masks import MaskEngine, ScoreSearch, ScoreSearchConfig, SiteKind
from ..nn import GraphModel
from ..training import TrainConfig, TrainResult, evaluate, train
from .base import Fitted
from .dense import Dense, FixedMasks


@dataclass(frozen=True)
class JackpotConfig:
    """Settings of the jackpot search.

    Attributes:
        search_epochs: full-batch score-search steps (each followed by the swaps).
        search: optimisation of the scores (:class:`~gnnprune.masks.ScoreSearchConfig`; its
            learning rate here 1.0: a full-batch step per epoch, far fewer steps than on images).
        teacher_weight: weight :math:`\lambda` of the cross-entropy to the dense model's
            predictions on the unlabelled nodes in the search loss (0: labelled nodes only).
        finetune_epochs: train the kept weights under the found masks for this many epochs
            afterwards (0: no fine-tune, the weights stay those of the dense model).
        dense_gates: the dense model learns (in-run dense phase) or has (``from_run``) edge
            weights and feature gates; edges and features can only be searched with them.
        from_run: a finished run folder to take the dense model from (seed by seed) instead of
            training it; ``None``: train it in the run.
    """

    search_epochs: int = 200
    search: ScoreSearchConfig = dataclasses.field(default_factory=lambda: ScoreSearchConfig(lr=1.0))
    teacher_weight: float = 0.3
    finetune_epochs: int = 0
    dense_gates: bool = True
    from_run: str | None = None

    def __post_init__(self) -> None:
        if self.search_epochs < 1:
            raise ValueError(f"search_epochs must be >= 1, got {self.search_epochs}")
        if not self.teacher_weight >= 0:
            raise ValueError(f"teacher_weight must be >= 0, got {self.teacher_weight}")
        if self.finetune_epochs < 0:
            raise ValueError(f"finetune_epochs must be >= 0, got {self.finetune_epochs}")

    def check_targets(self, targets: PruneTargets) -> None:
        if not self.dense_gates and (targets.edges > 0 or targets.features > 0):
            raise ValueError("jackpot searches edges and features only in a dense model with learned edge weights "
                             "and feature gates; this one has none (set the edge and feature sparsity to 0)")


def magnitude_masks(pruner: CoPruner, targets: PruneTargets) -> MaskEngine:
    """An engine with one-shot magnitude masks at ``targets`` (as :class:`~gnnprune.methods.OneShot`'s
    cut: global edge ranking, features by ``|gate| * ||weight row||``); ``pruner`` is unchanged."""
    # edges without learned weights have no magnitude; they are all kept (see searched_sites)
    fixed_edges = {} if pruner.edge_logit is not None else {EDGES: torch.ones(pruner.edge_set.num_edges)}
    masks = pruner.would_pick(targets, prune_scores=fixed_edges, edge_ranking=EdgeRanking.GLOBAL,
                              feature_score=FeatureScore.MAGNITUDE)
    engine = MaskEngine.from_state_dict(pruner.engine.state_dict())
    engine.set_mask(EDGES, masks["edges"])
    engine.set_mask(FEATURES, masks["features"])
    offset = 0
    for site in engine.sites(SiteKind.WEIGHT):
        engine.set_mask(site.name, masks["weights"][offset:offset + site.numel].view(site.mask.shape))
        offset += site.numel
    return engine


def searched_sites(pruner: CoPruner, targets: PruneTargets) -> list[str]:
    """The sites with a target above 0 (edges only where the model uses edge weights)."""
    names = [WEIGHT_PREFIX + name for name in pruner.weights] if targets.weights > 0 else []
    if targets.edges > 0:
        if pruner.edge_logit is None:
            raise ValueError(f"{type(pruner.model).__name__} uses no edge weights: jackpot cannot search its edges "
                             "(set the edge sparsity to 0)")
        names.append(EDGES)
    if targets.features > 0:
        names.append(FEATURES)
    return names


def fit_jackpot(model: GraphModel, data: GraphData, targets: PruneTargets, config: JackpotConfig,
                train_config: TrainConfig, progress: bool = True, dense: Fitted | None = None) -> Fitted:
    """Train (or take) a dense model, search a jackpot mask in its frozen weights, optionally fine-tune.

    Args:
        dense: a trained dense model's state (its ``model`` is already loaded with it, its pruner
            all live, with gates iff ``config.dense_gates``); ``None``: train one here.
    Returns:
        the selected search epoch with its masks; ``result.updates`` holds one ``jackpot`` entry
        (the dense and magnitude-mask scores, swaps per site, and whether every parameter of the
        model is bit-identical to the dense model's at the live entries).
    """
    config.check_targets(targets)
    if dense is None:
        pruner = CoPruner(model, data, learn_edge_weights=config.dense_gates, learn_feature_gates=config.dense_gates)
        dense_result = train(model, data, pruner, Dense(), train_config, progress=progress)
        dense = Fitted(dense_result, pruner)
    pruner = dense.pruner
    dense_params = {name: p.detach().clone() for name, p in model.named_parameters()}
    dense_logits, dense_scores = evaluate(model, pruner, data)
    loss_fn = _search_loss(data, dense_logits, config.teacher_weight)
    engine = magnitude_masks(pruner, targets)
    names = searched_sites(pruner, targets)
    search = ScoreSearch(engine, names, config.search, total_steps=config.search_epochs)
    start = time.perf_counter()
    weights = [name for name in pruner.weights if WEIGHT_PREFIX + name in names]
    for param in model.parameters():
        param.requires_grad_(False)
    gates = [g for g in pruner.gate_parameters()]
    for gate in gates:
        gate.requires_grad_(False)
    _attach(model, weights, search)
    try:
        magnitude = _search_scores(model, pruner, data, search)
        history, best = [], None
        bar = tqdm(range(config.search_epochs), desc=f"jackpot {data.name}", disable=not progress, leave=False)
        for epoch in bar:
            model.train()
            search.zero_grad()
            logits = model(*_search_inputs(pruner, search))
            loss = loss_fn(logits)
            loss.backward()
            swapped = search.step()
            scores = _search_scores(model, pruner, data, search)
            history.append({"epoch": epoch, "loss": float(loss.detach()), "swapped": swapped, **scores})
            if best is None or scores["val"] > best["val"]:
                best = {"epoch": epoch, **scores, "masks": engine.state_dict()}
            bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", val=f"{scores['val']:.3f}", refresh=False)
    finally:
        _detach(model, weights)
        for param in [*model.parameters(), *gates]:
            param.requires_grad_(True)
    search_time = time.perf_counter() - start
    unchanged = all(torch.equal(p, dense_params[name]) for name, p in model.named_parameters())
    pruner.engine.load_state_dict(best["masks"])
    pruner.refresh()  # zero dead weights (what the run saves)
    unchanged = unchanged and _live_entries_equal(model, pruner, dense_params)
    record = {"dense": dense_scores, "magnitude": magnitude, "search_epochs": config.search_epochs,
              "selected_search_epoch": best["epoch"],
              "swapped": dict(search.swaps), "sparsity": {"weights": pruner.engine.sparsity(kind=SiteKind.WEIGHT),
                                                          "edges": pruner.engine.sparsity(EDGES),
                                                          "features": pruner.engine.sparsity(FEATURES)},
              "weights_unchanged": unchanged, "search_time_s": search_time}
    epochs = dense.result.epochs_run + len(history)
    seconds = dense.result.train_time_s + search_time
    if config.finetune_epochs > 0:
        tuned = train(model, data, pruner, FixedMasks(),
                      dataclasses.replace(train_config, epochs=config.finetune_epochs), progress=progress)
        record["finetuned"] = {"val": tuned.val, "test": tuned.test, "best_epoch": tuned.best_epoch,
                               "weights_unchanged": _live_entries_equal(model, pruner, dense_params)}
        result = dataclasses.replace(tuned, epochs_run=epochs + tuned.epochs_run,
                                     train_time_s=seconds + tuned.train_time_s, updates=[{"jackpot": record}])
        return Fitted(result, pruner)
    _, final = evaluate(model, pruner, data)
    result = TrainResult(best["epoch"], final["val"], final["test"], final["train"], seconds, epochs, history,
                         [{"jackpot": record}], copy.deepcopy(model.state_dict()), copy.deepcopy(pruner.state_dict()))
    return Fitted(result, pruner)


def _search_loss(data: GraphData, dense_logits: Tensor, weight: float):
    r"""The search's loss: the task loss on labelled nodes plus ``weight`` times the cross-entropy
    to the dense model's predictions on the others,
    :math:`L = \mathrm{CE}(z_{train}, y_{train}) + \lambda\,\mathrm{CE}(z_{rest}, \arg\max z^{dense}_{rest})`."""
    labelled = data.train_mask
    rest = ~labelled
    teacher = dense_logits.argmax(-1)

    def loss(logits: Tensor) -> Tensor:
        value = data.loss(logits[labelled], data.y[labelled])
        if weight > 0 and data.task == "multiclass" and bool(rest.any()):
            value = value + weight * torch.nn.functional.cross_entropy(logits[rest], teacher[rest])
        return value

    return loss


def _search_inputs(pruner: CoPruner, search: ScoreSearch) -> tuple:
    """Every feature column and edge, gated by the dense gates times the search's masks."""
    features = pruner.node_features.select()
    gate = pruner.feature_gate if pruner.feature_gate is not None else torch.ones(pruner.node_features.num_features)
    edge_weight = pruner.edge_weight() if pruner.edge_logit is not None else torch.ones(pruner.edge_set.num_edges)
    if FEATURES in search.scores:
        gate = gate * search.mask(FEATURES)
    if EDGES in search.scores:
        edge_weight = edge_weight * search.mask(EDGES)
    return features.gated(gate), MaskedGraph(pruner.edge_set.select(), edge_weight)


@torch.no_grad()
def _search_scores(model: GraphModel, pruner: CoPruner, data: GraphData, search: ScoreSearch) -> dict[str, float]:
    from ..metrics import get_evaluator

    model.eval()
    logits = model(*_search_inputs(pruner, search))
    score = get_evaluator(data.metric)
    return {split: score(logits, data.y, getattr(data, f"{split}_mask")) for split in ("train", "val", "test")}


def _live_entries_equal(model: GraphModel, pruner: CoPruner, dense: dict[str, Tensor]) -> bool:
    """Every parameter equals the dense model's bit for bit, except prunable weights at dead entries."""
    for name, param in model.named_parameters():
        if name in pruner.weights:
            mask = pruner.weight_mask(name)
            if not torch.equal(param[mask], dense[name][mask]):
                return False
        elif not torch.equal(param, dense[name]):
            return False
    return True


def _attach(model: GraphModel, names: list[str], search: ScoreSearch) -> None:
    for name in names:
        module, attr = model.weight_owner(name)
        parametrize.register_parametrization(module, attr, search.parametrization(WEIGHT_PREFIX + name), unsafe=True)


def _detach(model: GraphModel, names: list[str]) -> None:
    """Remove the parametrizations, restoring the plain (unchanged) weight parameters."""
    for name in names:
        module, attr = model.weight_owner(name)
        if parametrize.is_parametrized(module, attr):
            parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
