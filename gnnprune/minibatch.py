"""Mini-batch co-pruning for graphs that do not fit full-batch training.

Masks and gates live on the global graph (one :class:`~gnnprune.masks.MaskEngine`, one edge
logit per undirected edge, one gate per feature column), exactly as in full-batch training;
only the forward/backward passes run on batches, drawn by one of the plain-torch loaders of
:mod:`gnnprune.loader` (``random-nodes`` or ``neighbors``). Either way a batch sees only kept
edges and its nodes' *kept* feature columns.

Pruning reuses the full-batch machinery: :class:`MiniBatchCoPruner` is a
:class:`~gnnprune.copruning.CoPruner` whose probe pass (scores for regrowth) runs over batches
that contain every edge, dead ones at value 0, and accumulates the gradients on the global
graph; mask updates are :meth:`CoPruner.update` unchanged, called by the same method hooks
(:class:`~gnnprune.methods.CGP`). Evaluation is one forward over the whole kept graph
without gradients, every layer over all nodes.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .copruning import CoPruner, WeightGranularity
from .data import GraphData
from .graph import EdgeSelection, MaskedGraph
from .loader import LOADERS, WHOLE, MiniBatchConfig, NodeBatch, RankShare
from .masks import WeightDistribution
from .methods.base import Fitted
from .nn import GraphModel
from .training import Method, TrainConfig, TrainingRun, TrainResult, train


class MiniBatchCoPruner(CoPruner):
    """A :class:`CoPruner` that also serves node batches of the kept graph and probes by batches.

    Args:
        model, data: as for :class:`CoPruner`.
        batching: batch size and loader.
        seed: seeds the batch partitions (one stream per pruner).
        share: this process's share of every step under data parallelism (see :mod:`gnnprune.loader`).
        **kwargs: :class:`CoPruner` options (learned gates, weight granularity).
    """

    def __init__(self, model: GraphModel, data: GraphData, batching: MiniBatchConfig = MiniBatchConfig(),
                 seed: int = 0, share: RankShare = WHOLE, **kwargs) -> None:
        super().__init__(model, data, **kwargs)
        self.batching = batching
        self.share = share
        self.generator = torch.Generator().manual_seed(seed)

    def batches(self, kept_only: bool = True) -> Iterator[NodeBatch]:
        """One epoch of batches (one per optimizer step) over the kept edges (``kept_only``) or over every edge."""
        pool = self._edges.index if kept_only else self._all_edges.index
        return LOADERS[self.batching.loader](self.edge_set, pool, self.batching, self.generator, self.share)

    def batch_inputs(self, batch: NodeBatch) -> Tensor:
        """Kept, gated feature columns of the batch's nodes."""
        return self._features.rows(batch.nodes, self.feature_gate)

    def batch_graph(self, batch: NodeBatch) -> MaskedGraph:
        """The batch's kept edges with their current (learned) weights."""
        return MaskedGraph(EdgeSelection(batch.edges), self.edge_weight(batch.edge_ids))

    def state_dict(self) -> dict:
        """Masks and gates, plus the batch generator (so that a resumed run draws the same batches)."""
        return {**super().state_dict(), "batch_generator": self.generator.get_state()}

    def state_keys(self) -> set[str]:
        return super().state_keys() | {"batch_generator"}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.generator.set_state(state["batch_generator"])

    def _probe_backward(self, loss_fn: Callable[[Tensor, NodeBatch], Tensor], gate: Tensor,
                        edge_value: Tensor) -> float:
        """The probe over one epoch of batches containing every edge; the loss is the mean over batches
        (of a rank's batches weighted as in training: a filler counts zero)."""
        batches = list(self.batches(kept_only=False))
        total = 0.0
        for batch in batches:
            graph = MaskedGraph(EdgeSelection(batch.edges), edge_value[batch.edge_ids])
            loss = loss_fn(self.model(self._all_features.rows(batch.nodes, gate), graph), batch) \
                * (batch.weight / len(batches))
            loss.backward()
            total += float(loss.detach())
        return total


@dataclass
class MiniBatchRun(TrainingRun):
    """:class:`TrainingRun` whose loss is computed on one batch."""

    def train_loss(self, logits: Tensor, batch: NodeBatch) -> Tensor:
        """The full-batch objective restricted to the batch's nodes (see :meth:`TrainingRun.train_loss`).

        Only ``batch.loss_nodes`` count (all nodes when ``None``). A batch without labelled
        nodes contributes a zero supervised term.
        """
        nodes = batch.nodes
        if batch.loss_nodes is not None:
            logits, nodes = logits[batch.loss_nodes], nodes[batch.loss_nodes]
        labelled = self.data.train_mask[nodes]
        loss = self.data.loss(logits[labelled], self.data.y[nodes][labelled]) if bool(labelled.any()) \
            else logits.sum() * 0.0
        weight = self.config.pseudo_label_weight
        if self.config.pseudo_label_warmup > 0:
            weight *= min(1.0, self.epoch / self.config.pseudo_label_warmup)
        if weight > 0 and self.pseudo_mask is not None:
            mask = self.pseudo_mask[nodes]
            if bool(mask.any()):
                loss = loss + weight * torch.nn.functional.cross_entropy(logits[mask], self.pseudo_labels[nodes][mask])
        return loss


def step_batches(run: MiniBatchRun, forward: Callable[..., Tensor]) -> tuple[list[float], int]:
    """One optimizer step per batch of the epoch, the batch's loss times its
    :attr:`~gnnprune.loader.NodeBatch.weight`; ``forward`` is the model, or its data-parallel wrapper.

    Returns the losses of the batches that count (weight above 0) and the number of steps.
    """
    pruner, losses, steps = run.pruner, [], 0
    for batch in pruner.batches():
        run.optimizer.zero_grad(set_to_none=True)
        logits = forward(pruner.batch_inputs(batch), pruner.batch_graph(batch))
        loss = run.step(run.train_loss(logits, batch) * batch.weight)
        steps += 1
        if batch.weight > 0:
            losses.append(loss)
    return losses, steps


def minibatch_step(run: MiniBatchRun, method: Method) -> dict:
    """One epoch of mini-batch optimisation: an optimizer step per batch of the kept graph.

    Returns the mean batch loss and the number of batches for the epoch's history.
    """
    losses, steps = step_batches(run, run.model)
    return {"loss": sum(losses) / len(losses), "batches": steps}


def train_minibatch(model: GraphModel, data: GraphData, pruner: MiniBatchCoPruner, method: Method,
                    config: TrainConfig, progress: bool = True, **loop) -> TrainResult:
    """:func:`gnnprune.training.train` with one optimizer step per batch (:func:`minibatch_step`).

    Each epoch: the method's ``on_epoch_start`` (mask updates on the global graph, probe by
    batches), then for every batch of the kept graph one forward/backward, dead-weight
    gradients masked, an Adam step and dead weights re-zeroed; then evaluation over the whole
    kept graph. Model selection, checkpoints, resume (the batch generator is part of the
    pruner's state), stop requests and the NaN guard are those of the one training loop.
    """
    return train(model, data, pruner, method, config, progress, run_class=MiniBatchRun, epoch_step=minibatch_step,
                 **loop)


def train_once_minibatch(method: Method, model: GraphModel, data: GraphData, config: TrainConfig, *,
                         batching: MiniBatchConfig, learn_gates: bool = False,
                         granularity: WeightGranularity = WeightGranularity.ELEMENT,
                         distribution: WeightDistribution = WeightDistribution.UNIFORM, epochs: int | None = None,
                         progress: bool = True, **loop) -> Fitted:
    """:func:`gnnprune.methods.train_once` on node batches (the batch partitions are seeded by ``config.seed``)."""
    pruner = MiniBatchCoPruner(model, data, batching, seed=config.seed, learn_edge_weights=learn_gates,
                               learn_feature_gates=learn_gates, weight_granularity=granularity,
                               weight_distribution=distribution)
    if epochs is not None:
        config = dataclasses.replace(config, epochs=epochs)
    return Fitted(train_minibatch(model, data, pruner, method, config, progress=progress, **loop), pruner)
