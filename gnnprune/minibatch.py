"""Mini-batch co-pruning for graphs that do not fit full-batch training.

Masks and gates live on the global graph (one :class:`~gnnprune.masks.MaskEngine`, one edge
logit per undirected edge, one gate per feature column), exactly as in full-batch training;
only the forward/backward passes run on batches. Two loaders, both plain torch (they need
neither ``pyg-lib`` nor ``torch-sparse``):

* ``random-nodes`` (PyG's ``RandomNodeLoader``): each epoch the nodes are split into
  :math:`\\lceil N / b \\rceil` random parts of ``b`` nodes, and a part sees the *kept* edges
  between its own nodes; every node of the part counts in the loss.
* ``neighbors`` (GraphSAGE sampling, as PyG's ``NeighborLoader``): each epoch the nodes are
  split into random batches of ``b`` seed nodes; from the seeds, every hop samples up to
  ``fanouts[h]`` kept edges per newly reached node, without replacement; the batch holds the
  sampled edges and the nodes they reach, and only the seeds count in the loss.

Either way a batch sees only kept edges and its nodes' *kept* feature columns.

Pruning reuses the full-batch machinery: :class:`MiniBatchCoPruner` is a
:class:`~gnnprune.copruning.CoPruner` whose probe pass (scores for regrowth) runs over batches
that contain every edge, dead ones at value 0, and accumulates the gradients on the global
graph; mask updates are :meth:`CoPruner.update` unchanged, called by the same method hooks
(:class:`~gnnprune.methods.CGP`). Evaluation is one forward over the whole kept graph
without gradients, every layer over all nodes.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .copruning import CoPruner, WeightGranularity
from .data import GraphData
from .graph import EdgeSelection, EdgeSet, MaskedGraph
from .masks import WeightDistribution
from .methods.base import Fitted
from .nn import GraphModel
from .sparse import row_entries, row_pointers
from .training import Method, TrainConfig, TrainingRun, TrainResult, train


@dataclass(frozen=True)
class MiniBatchConfig:
    """Batching of :func:`train_minibatch`.

    Attributes:
        batch_size: nodes per batch (``neighbors``: seed nodes per batch); the last batch of an
            epoch may be smaller.
        loader: how batches are drawn: ``"random-nodes"`` (induced subgraphs of random node
            parts) or ``"neighbors"`` (sampled neighbourhoods of random seed nodes).
        fanouts: ``neighbors`` only: edges sampled per node at each hop (one entry per hop).
    """

    batch_size: int = 50_000
    loader: str = "random-nodes"
    fanouts: tuple[int, ...] = (10, 10)

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {self.batch_size}")
        if self.loader not in LOADERS:
            raise ValueError(f"unknown loader {self.loader!r}; choose from {', '.join(LOADERS)}")
        object.__setattr__(self, "fanouts", tuple(int(f) for f in self.fanouts))
        if not self.fanouts or any(f < 1 for f in self.fanouts):
            raise ValueError(f"fanouts must be one or more positive integers, got {self.fanouts}")


@dataclass(frozen=True)
class NodeBatch:
    """The subgraph induced by some nodes.

    Attributes:
        nodes: ``[n_b]`` global ids, ascending (local id ``i`` is ``nodes[i]``).
        edge_ids: ``[e_b]`` global ids of the undirected edges between them (among the pool drawn from).
        edges: the same edges over local ids (``u < v`` is kept because ``nodes`` ascends).
        loss_nodes: local ids of the nodes whose loss counts; ``None``: all of them.
    """

    nodes: Tensor
    edge_ids: Tensor
    edges: EdgeSet
    loss_nodes: Tensor | None = None


def random_node_batches(edge_set: EdgeSet, edge_pool: Tensor, batching: MiniBatchConfig,
                        generator: torch.Generator) -> Iterator[NodeBatch]:
    """Split the nodes into random parts of ``batch_size``; yield each part's induced subgraph.

    Args:
        edge_set: the global undirected edges.
        edge_pool: ``[P]`` ids of the edges a batch may contain (the kept edges, or all of them).
        batching: ``batch_size``: nodes per part.
        generator: seeds the partition.

    An edge of the pool lands in a batch iff both its endpoints fall in the same part, so a
    batch holds about ``1 / num_parts`` of the pool's edges. Part ids and local ids are int32.
    """
    n, batch_size = edge_set.num_nodes, batching.batch_size
    num_parts = max(1, math.ceil(n / batch_size))
    perm = torch.randperm(n, generator=generator)
    part = torch.empty(n, dtype=torch.int32)
    part[perm] = torch.div(torch.arange(n, dtype=torch.int32), batch_size, rounding_mode="floor")
    u, v = edge_set.edges[0, edge_pool], edge_set.edges[1, edge_pool]
    edge_part = part[u]
    inside = edge_part == part[v]
    del u, v
    edge_ids = edge_pool[inside]
    edge_part = edge_part[inside]
    del inside
    order = torch.argsort(edge_part, stable=True)
    edge_ids = edge_ids[order]
    counts = torch.bincount(edge_part, minlength=num_parts).tolist()
    del order, edge_part
    local = torch.empty(n, dtype=torch.int32)
    offset = 0
    for p, count in enumerate(counts):
        nodes = perm[p * batch_size:(p + 1) * batch_size].sort().values
        local[nodes] = torch.arange(nodes.numel(), dtype=torch.int32)
        ids = edge_ids[offset:offset + count]
        offset += count
        yield NodeBatch(nodes, ids, EdgeSet(local[edge_set.edges[:, ids]], nodes.numel()))


def neighbor_batches(edge_set: EdgeSet, edge_pool: Tensor, batching: MiniBatchConfig,
                     generator: torch.Generator) -> Iterator[NodeBatch]:
    """Random batches of seed nodes, each grown by sampling ``batching.fanouts`` edges per hop.

    Args:
        edge_set: the global undirected edges.
        edge_pool: ``[P]`` ids of the edges that may be sampled (the kept edges, or all of them).
        batching: ``batch_size`` seeds per batch, ``fanouts`` edges per node and hop.
        generator: seeds the seed partition and the sampling.

    A node reached at hop ``h`` draws ``min(fanouts[h], degree)`` of its pool edges uniformly
    without replacement; nodes already in the batch are not expanded again. The batch's graph is
    the set of sampled edges (used in both directions, like every edge here); ``loss_nodes`` are
    the seeds.
    """
    n = edge_set.num_nodes
    adjacency = _pool_adjacency(edge_set, edge_pool)
    perm = torch.randperm(n, generator=generator)
    for begin in range(0, n, batching.batch_size):
        seeds = perm[begin:begin + batching.batch_size]
        reached = torch.zeros(n, dtype=torch.bool)
        reached[seeds] = True
        frontier, sampled = seeds, []
        for fanout in batching.fanouts:
            neighbours, ids = _sample_neighbours(adjacency, frontier, fanout, generator)
            sampled.append(ids)
            frontier = neighbours[~reached[neighbours]].unique()
            reached[frontier] = True
            if frontier.numel() == 0:
                break
        nodes = reached.nonzero().view(-1)
        ids = torch.cat(sampled).unique()
        local = torch.searchsorted(nodes, edge_set.edges[:, ids])
        yield NodeBatch(nodes, ids, EdgeSet(local, nodes.numel()), torch.searchsorted(nodes, seeds.sort().values))


@dataclass(frozen=True)
class _Adjacency:
    crow: Tensor       # [N + 1]
    neighbour: Tensor  # [2P], grouped by source node
    edge_id: Tensor    # [2P], the undirected edge of each entry


def _pool_adjacency(edge_set: EdgeSet, edge_pool: Tensor) -> _Adjacency:
    u, v = edge_set.edges[0, edge_pool], edge_set.edges[1, edge_pool]
    source = torch.cat([u, v])
    order = torch.argsort(source, stable=True)
    crow = row_pointers(source, edge_set.num_nodes)
    return _Adjacency(crow, torch.cat([v, u])[order], torch.cat([edge_pool, edge_pool])[order])


def _sample_neighbours(adjacency: _Adjacency, frontier: Tensor, fanout: int,
                       generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Up to ``fanout`` random pool entries of every frontier node: ``(neighbour nodes, edge ids)``."""
    owner, entry, position = row_entries(adjacency.crow, frontier)
    # shuffle within each owner's group (groups stay contiguous and in order), keep the first `fanout`
    order = torch.argsort(owner.double() + torch.rand(owner.numel(), generator=generator, dtype=torch.float64))
    chosen = entry[order[position < fanout]]
    return adjacency.neighbour[chosen], adjacency.edge_id[chosen]


#: batch loaders by name: ``loader(edge_set, edge_pool, batching, generator) -> iterator of NodeBatch``
LOADERS: dict[str, Callable[..., Iterator[NodeBatch]]] = {"random-nodes": random_node_batches,
                                                          "neighbors": neighbor_batches}


class MiniBatchCoPruner(CoPruner):
    """A :class:`CoPruner` that also serves node batches of the kept graph and probes by batches.

    Args:
        model, data: as for :class:`CoPruner`.
        batching: batch size and loader.
        seed: seeds the batch partitions (one stream per pruner).
        **kwargs: :class:`CoPruner` options (learned gates, weight granularity).
    """

    def __init__(self, model: GraphModel, data: GraphData, batching: MiniBatchConfig = MiniBatchConfig(),
                 seed: int = 0, **kwargs) -> None:
        super().__init__(model, data, **kwargs)
        self.batching = batching
        self.generator = torch.Generator().manual_seed(seed)

    def batches(self, kept_only: bool = True) -> Iterator[NodeBatch]:
        """One epoch of batches over the kept edges (``kept_only``) or over every edge."""
        pool = self._edges.index if kept_only else self._all_edges.index
        return LOADERS[self.batching.loader](self.edge_set, pool, self.batching, self.generator)

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
        """The probe over one epoch of batches containing every edge; the loss is the mean over batches."""
        batches = list(self.batches(kept_only=False))
        total = 0.0
        for batch in batches:
            graph = MaskedGraph(EdgeSelection(batch.edges), edge_value[batch.edge_ids])
            loss = loss_fn(self.model(self._all_features.rows(batch.nodes, gate), graph), batch) / len(batches)
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


def minibatch_step(run: MiniBatchRun, method: Method) -> dict:
    """One epoch of mini-batch optimisation: an optimizer step per batch of the kept graph.

    Returns the mean batch loss and the number of batches for the epoch's history.
    """
    model, pruner, optimizer = run.model, run.pruner, run.optimizer
    losses = []
    for batch in pruner.batches():
        optimizer.zero_grad(set_to_none=True)
        loss = run.train_loss(model(pruner.batch_inputs(batch), pruner.batch_graph(batch)), batch)
        losses.append(run.step(loss))
    return {"loss": sum(losses) / len(losses), "batches": len(losses)}


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
