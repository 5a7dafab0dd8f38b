"""What every method returns, and the single-run driver shared by the one-loop methods."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..copruning import CoPruner, WeightGranularity
from ..data import GraphData
from ..masks import WeightDistribution
from ..nn import GraphModel
from ..training import Method, TrainConfig, TrainResult, train


@dataclass
class Fitted:
    """A trained, pruned model: the selected training result and the pruner holding its masks.

    ``result.epochs_run`` and ``result.train_time_s`` count the method's whole training cost
    (every round of an iterative method).
    """

    result: TrainResult
    pruner: CoPruner


def train_once(method: Method, model: GraphModel, data: GraphData, config: TrainConfig, *,
               learn_gates: bool = False, granularity: WeightGranularity = WeightGranularity.ELEMENT,
               distribution: WeightDistribution = WeightDistribution.UNIFORM, epochs: int | None = None,
               progress: bool = True, **loop) -> Fitted:
    """One training run of ``model`` under ``method``'s hooks (dense, random, one-shot, CGP).

    Args:
        learn_gates: learn an edge weight per undirected edge and a gate per feature column.
        granularity: what one weight-mask entry covers.
        distribution: how the weight target is spread over the weight tensors.
        epochs: total epochs of the run (default ``config.epochs``).
        loop: checkpoint / resume / stop arguments of :func:`~gnnprune.training.train`.
    """
    pruner = CoPruner(model, data, learn_edge_weights=learn_gates, learn_feature_gates=learn_gates,
                      weight_granularity=granularity, weight_distribution=distribution)
    if epochs is not None:
        config = dataclasses.replace(config, epochs=epochs)
    result = train(model, data, pruner, method, config, progress=progress, **loop)
    return Fitted(result, pruner)
