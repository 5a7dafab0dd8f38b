"""Node-batch loaders for mini-batch training, both plain torch (they need neither ``pyg-lib``
nor ``torch-sparse``):

* ``random-nodes`` (PyG's ``RandomNodeLoader``): each epoch the nodes are split into
  :math:`\\lceil N / b \\rceil` random parts of ``b`` nodes, and a part sees the *kept* edges
  between its own nodes; every node of the part counts in the loss.
* ``neighbors`` (GraphSAGE sampling, as PyG's ``NeighborLoader``): each epoch the nodes are
  split into random batches of ``b`` seed nodes; from the seeds, every hop samples up to
  ``fanouts[h]`` kept edges per newly reached node, without replacement; the batch holds the
  sampled edges and the nodes they reach, and only the seeds count in the loss.

Under data parallelism (:mod:`gnnprune.distributed`) a loader draws one rank's share of every
optimizer step (:class:`RankShare`) from the generator all ranks hold alike: ``random-nodes``
deals whole parts to the ranks (a part split between ranks would lose the edges between the
halves), ``neighbors`` splits each batch's seed nodes between the ranks, which sample their own
neighbourhoods. Every rank yields one batch per step; a rank with nothing left in the last step
gets a filler batch of weight 0, because every rank must take part in every step.

Mini-batch training itself (masks on the global graph, probe by batches) is in
:mod:`gnnprune.minibatch`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .graph import EdgeSet
from .sparse import row_entries, row_pointers


@dataclass(frozen=True)
class MiniBatchConfig:
    """Batching of :func:`~gnnprune.minibatch.train_minibatch`.

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
class RankShare:
    """Which share of every step a process draws: rank ``rank`` of ``world_size`` (one process: all of it)."""

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in 0 .. world_size - 1, got rank {self.rank} of {self.world_size}")

    @property
    def whole(self) -> bool:
        return self.world_size == 1


WHOLE = RankShare()


@dataclass(frozen=True)
class NodeBatch:
    """The subgraph induced by some nodes.

    Attributes:
        nodes: ``[n_b]`` global ids, ascending (local id ``i`` is ``nodes[i]``).
        edge_ids: ``[e_b]`` global ids of the undirected edges between them (among the pool drawn from).
        edges: the same edges over local ids (``u < v`` is kept because ``nodes`` ascends).
        loss_nodes: local ids of the nodes whose loss counts; ``None``: all of them.
        weight: the factor of the batch's loss: 1 in one process; under data parallelism ``W``
            times the rank's fraction of the step's seeds, and 0 for a filler batch in a step that
            has nothing left for the rank (see :class:`RankShare`).
    """

    nodes: Tensor
    edge_ids: Tensor
    edges: EdgeSet
    loss_nodes: Tensor | None = None
    weight: float = 1.0


def random_node_batches(edge_set: EdgeSet, edge_pool: Tensor, batching: MiniBatchConfig,
                        generator: torch.Generator, share: RankShare = WHOLE) -> Iterator[NodeBatch]:
    """Split the nodes into random parts of ``batch_size``; yield each part's induced subgraph.

    Args:
        edge_set: the global undirected edges.
        edge_pool: ``[P]`` ids of the edges a batch may contain (the kept edges, or all of them).
        batching: ``batch_size``: nodes per part.
        generator: seeds the partition.
        share: this rank's share: parts ``rank``, ``rank + W``, ... (step ``s`` deals parts
            ``sW .. sW + W - 1``); in the last step a rank without a part gets a filler (weight 0).

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
    ends = torch.bincount(edge_part, minlength=num_parts).cumsum(0).tolist()
    del order, edge_part
    local = torch.empty(n, dtype=torch.int32)
    for step in range(math.ceil(num_parts / share.world_size)):
        p = step * share.world_size + share.rank
        weight = 1.0 if p < num_parts else 0.0
        p = p if p < num_parts else p % num_parts
        nodes = perm[p * batch_size:(p + 1) * batch_size].sort().values
        local[nodes] = torch.arange(nodes.numel(), dtype=torch.int32)
        ids = edge_ids[(ends[p - 1] if p > 0 else 0):ends[p]]
        yield NodeBatch(nodes, ids, EdgeSet(local[edge_set.edges[:, ids]], nodes.numel()), weight=weight)


def neighbor_batches(edge_set: EdgeSet, edge_pool: Tensor, batching: MiniBatchConfig,
                     generator: torch.Generator, share: RankShare = WHOLE) -> Iterator[NodeBatch]:
    """Random batches of seed nodes, each grown by sampling ``batching.fanouts`` edges per hop.

    Args:
        edge_set: the global undirected edges.
        edge_pool: ``[P]`` ids of the edges that may be sampled (the kept edges, or all of them).
        batching: ``batch_size`` seeds per batch, ``fanouts`` edges per node and hop.
        generator: seeds the seed partition and the sampling.
        share: this rank's share of every batch: seeds ``rank``, ``rank + W``, ... of it, grown
            with a generator of its own (seeded from ``generator``, which every rank then advances
            alike) and weighted ``W`` times its fraction of the batch's seeds (so the mean weight over
            the ranks is 1); a rank left without seeds in the last batch gets a filler (weight 0).

    A node reached at hop ``h`` draws ``min(fanouts[h], degree)`` of its pool edges uniformly
    without replacement; nodes already in the batch are not expanded again. The batch's graph is
    the set of sampled edges (used in both directions, like every edge here); ``loss_nodes`` are
    the seeds.
    """
    n = edge_set.num_nodes
    adjacency = _pool_adjacency(edge_set, edge_pool)
    perm = torch.randperm(n, generator=generator)
    for begin in range(0, n, batching.batch_size):
        seeds, sampler, weight = perm[begin:begin + batching.batch_size], generator, 1.0
        if not share.whole:
            sampler = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)) + share.rank)
            own = seeds[share.rank::share.world_size]
            seeds, weight = (own, share.world_size * own.numel() / seeds.numel()) if own.numel() else (seeds[:1], 0.0)
        reached = torch.zeros(n, dtype=torch.bool)
        reached[seeds] = True
        frontier, sampled = seeds, []
        for fanout in batching.fanouts:
            neighbours, ids = _sample_neighbours(adjacency, frontier, fanout, sampler)
            sampled.append(ids)
            frontier = neighbours[~reached[neighbours]].unique()
            reached[frontier] = True
            if frontier.numel() == 0:
                break
        nodes = reached.nonzero().view(-1)
        ids = torch.cat(sampled).unique()
        local = torch.searchsorted(nodes, edge_set.edges[:, ids])
        yield NodeBatch(nodes, ids, EdgeSet(local, nodes.numel()), torch.searchsorted(nodes, seeds.sort().values),
                        weight)


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


#: batch loaders by name: ``loader(edge_set, edge_pool, batching, generator, share=WHOLE) -> iterator of NodeBatch``
LOADERS: dict[str, Callable[..., Iterator[NodeBatch]]] = {"random-nodes": random_node_batches,
                                                          "neighbors": neighbor_batches}
