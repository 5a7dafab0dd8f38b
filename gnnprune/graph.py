"""Graphs whose edges can be masked: kept edges build the propagation operators.

Edges are stored once per undirected pair ``(u, v)`` with ``u < v``; both directed copies
share that one entry, so an edge mask is symmetric by construction. Self-loops are added by
the operators and are never prunable. A dead edge is *absent* from every operator, so the
cost of propagation follows the number of kept edges.

The sparsity pattern of an operator depends only on which edges are kept, so it is built
once per edge mask (:class:`EdgeSelection`) and reused; the values (learned edge weights and
normalisation) are recomputed each step and are differentiable.
"""
from __future__ import annotations

from functools import cached_property

import torch
from torch import Tensor

from .sparse import CSRPattern, SparseMatrix


class EdgeSet:
    """The undirected edges of a graph with ``num_nodes`` nodes.

    Args:
        edges: ``[2, E]`` long, each column ``(u, v)`` with ``u < v``, no duplicates.
        num_nodes: number of nodes.
    """

    def __init__(self, edges: Tensor, num_nodes: int) -> None:
        if edges.dim() != 2 or edges.size(0) != 2:
            raise ValueError(f"edges must have shape [2, E], got {tuple(edges.shape)}")
        if edges.numel() and not bool((edges[0] < edges[1]).all()):
            raise ValueError("undirected edges must be stored as (u, v) with u < v")
        if edges.numel() and int(edges.max()) >= num_nodes:
            raise ValueError(f"edge endpoint {int(edges.max())} out of range for {num_nodes} nodes")
        self.edges = edges.long().contiguous()
        self.num_nodes = int(num_nodes)

    @classmethod
    def from_edge_index(cls, edge_index: Tensor, num_nodes: int) -> "EdgeSet":
        """Collapse a (directed or undirected) ``edge_index`` to unique undirected pairs.

        Self-loops are dropped (operators add their own); ``(u, v)`` and ``(v, u)`` become one edge.
        """
        u, v = edge_index.long()
        keep = u != v
        lo, hi = torch.minimum(u[keep], v[keep]), torch.maximum(u[keep], v[keep])
        key = torch.unique(lo * num_nodes + hi)
        return cls(torch.stack([key // num_nodes, key % num_nodes]), num_nodes)

    @property
    def num_edges(self) -> int:
        return int(self.edges.size(1))

    def select(self, keep: Tensor | None = None) -> "EdgeSelection":
        """The kept edges (``keep``: bool ``[E]``; ``None`` keeps all)."""
        return EdgeSelection(self, keep)

    def directed(self, keep: Tensor | None = None) -> Tensor:
        """``[2, 2 * E_kept]`` edge_index with both directions of each kept edge."""
        e = self.edges if keep is None else self.edges[:, keep]
        return torch.cat([e, e.flip(0)], dim=1)


class EdgeSelection:
    """A fixed subset of an :class:`EdgeSet` with cached operator patterns.

    ``index`` lists the kept undirected edges; per-edge tensors given to the operators
    (edge weights) are in that order, one value per kept undirected edge.
    """

    def __init__(self, edge_set: EdgeSet, keep: Tensor | None = None) -> None:
        self.edge_set = edge_set
        if keep is None:
            self.index = torch.arange(edge_set.num_edges)
        else:
            if keep.dtype != torch.bool or keep.numel() != edge_set.num_edges:
                raise ValueError(f"keep must be a bool mask over {edge_set.num_edges} edges")
            self.index = keep.nonzero().view(-1)
        self._unit_cache: dict[str, SparseMatrix] = {}

    @property
    def num_nodes(self) -> int:
        return self.edge_set.num_nodes

    @property
    def num_kept(self) -> int:
        return int(self.index.numel())

    @cached_property
    def edge_index(self) -> Tensor:
        """``[2, 2 * num_kept]`` directed edges (source row 0, target row 1), kept only."""
        e = self.edge_set.edges[:, self.index]
        return torch.cat([e, e.flip(0)], dim=1)

    def _pattern(self, self_loops: bool) -> tuple[CSRPattern, Tensor]:
        """Pattern of ``A[target, source]`` and, per stored entry, its kept-edge index.

        Self-loop entries point at index ``num_kept`` (one past the kept edges).
        """
        n = self.num_nodes
        src, dst = self.edge_index
        edge_of = self._column_edges()
        if self_loops:
            loops = torch.arange(n)
            src, dst = torch.cat([src, loops]), torch.cat([dst, loops])
            edge_of = torch.cat([edge_of, torch.full((n,), self.num_kept)])
        pattern, order = CSRPattern.from_coo(dst, src, (n, n))
        return pattern, edge_of[order]

    def _column_edges(self) -> Tensor:
        """Per column of :attr:`edge_index`, the index of its weight (both directions share one)."""
        return torch.arange(self.num_kept).repeat(2)

    @cached_property
    def gcn_pattern(self) -> tuple[CSRPattern, Tensor]:
        return self._pattern(self_loops=True)

    @cached_property
    def neighbour_pattern(self) -> tuple[CSRPattern, Tensor]:
        return self._pattern(self_loops=False)

    def gcn_operator(self, edge_weight: Tensor | None = None) -> SparseMatrix:
        """Symmetrically normalised adjacency with self-loops (Kipf & Welling 2017).

        .. math::
            \\hat{A} = \\hat{D}^{-1/2} (A_w + I) \\hat{D}^{-1/2}, \\qquad
            \\hat{D}_{ii} = 1 + \\sum_j w_{ij}

        Args:
            edge_weight: ``[num_kept]`` weight of each kept undirected edge (default 1).
        """
        if edge_weight is None and "gcn" in self._unit_cache:
            return self._unit_cache["gcn"]
        pattern, edge_of = self.gcn_pattern
        w = entry_weights(edge_weight, edge_of, self.num_kept)
        deg = torch.zeros(self.num_nodes, dtype=w.dtype).index_add_(0, pattern.row, w)
        dinv = deg.pow(-0.5)
        op = SparseMatrix(pattern, dinv.index_select(0, pattern.row) * w * dinv.index_select(0, pattern.col))
        if edge_weight is None:
            self._unit_cache["gcn"] = op
        return op

    def mean_operator(self, edge_weight: Tensor | None = None) -> SparseMatrix:
        """Row-normalised adjacency without self-loops: the mean over (weighted) neighbours.

        .. math:: (A x)_i = \\frac{\\sum_j w_{ij} x_j}{\\sum_j w_{ij}}

        Nodes whose neighbours are all pruned get a zero row.
        """
        if edge_weight is None and "mean" in self._unit_cache:
            return self._unit_cache["mean"]
        pattern, edge_of = self.neighbour_pattern
        w = entry_weights(edge_weight, edge_of, self.num_kept)
        deg = torch.zeros(self.num_nodes, dtype=w.dtype).index_add_(0, pattern.row, w)
        op = SparseMatrix(pattern, w / deg.clamp_min(1e-12).index_select(0, pattern.row))
        if edge_weight is None:
            self._unit_cache["mean"] = op
        return op


class DirectedEdges(EdgeSelection):
    """A directed ``edge_index`` with one weight per column, as PyTorch Geometric passes graphs.

    Has the operators of :class:`EdgeSelection` (GCN normalisation with self-loops, weighted
    neighbour mean), built from the columns as given: column ``(j, i)`` is the entry
    ``A[i, j]`` and weight ``k`` of a model's ``edge_weight`` belongs to column ``k``. For a
    graph holding both directions of every edge with equal weights, the operators equal
    those of the same edges as an :class:`EdgeSelection`. Degrees are summed over incoming
    columns (as PyG's ``gcn_norm``).

    Args:
        edge_index: ``[2, E]`` long, (source, target) per column, no self-loops (the
            operators add their own).
        num_nodes: number of nodes.
    """

    def __init__(self, edge_index: Tensor, num_nodes: int) -> None:
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
        if edge_index.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"edge_index must hold integers, got {edge_index.dtype}")
        if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
            raise ValueError(f"edge_index has endpoints outside [0, {num_nodes})")
        if bool((edge_index[0] == edge_index[1]).any()):
            raise ValueError("edge_index holds self-loops; the operators add their own, drop them first")
        self.edge_index = edge_index.long()
        self._num_nodes = int(num_nodes)
        self._unit_cache: dict[str, SparseMatrix] = {}

    @property
    def num_nodes(self) -> int:
        return self._num_nodes

    @property
    def num_kept(self) -> int:
        """Number of columns (each carries its own weight)."""
        return int(self.edge_index.size(1))

    def _column_edges(self) -> Tensor:
        return torch.arange(self.num_kept)


def entry_weights(edge_weight: Tensor | None, edge_of: Tensor, num_kept: int) -> Tensor:
    """Per stored entry of a pattern, the weight of its undirected edge (self-loops: 1).

    Args:
        edge_weight: ``[num_kept]`` or ``None`` (all 1).
        edge_of: ``[nnz]`` kept-edge index of each entry; ``num_kept`` marks a self-loop.
    """
    if edge_weight is None:
        return torch.ones(edge_of.numel())
    if edge_weight.numel() != num_kept:
        raise ValueError(f"expected one weight per kept edge ({num_kept}), got {edge_weight.numel()}")
    # index_select, not [edge_of]: its backward is an index_add (2-3x faster than index_put at 2.5M entries)
    return torch.cat([edge_weight, edge_weight.new_ones(1)]).index_select(0, edge_of)


class MaskedGraph:
    """What a model sees of the graph in one step: the kept edges and their weights.

    Operators are computed lazily and once per step, so every layer of a model shares them.

    Args:
        selection: kept edges (with cached patterns).
        edge_weight: optional ``[num_kept]`` weights of the kept undirected edges.
    """

    def __init__(self, selection: EdgeSelection, edge_weight: Tensor | None = None) -> None:
        self.selection = selection
        self.edge_weight = edge_weight
        self._ops: dict[str, SparseMatrix | Tensor] = {}

    @classmethod
    def full(cls, edge_set: EdgeSet) -> "MaskedGraph":
        return cls(edge_set.select())

    @property
    def num_nodes(self) -> int:
        return self.selection.num_nodes

    @property
    def edge_index(self) -> Tensor:
        """Directed kept edges ``[2, 2 * num_kept]`` (source, target)."""
        return self.selection.edge_index

    @property
    def directed_edge_weight(self) -> Tensor | None:
        """Weights aligned with :attr:`edge_index`, or ``None``."""
        if self.edge_weight is None or isinstance(self.selection, DirectedEdges):
            return self.edge_weight
        return self.edge_weight.repeat(2)

    def gcn_entry_weights(self) -> Tensor | None:
        """``[nnz]`` edge weight of every stored entry of ``selection.gcn_pattern`` (self-loops 1), or ``None``."""
        if self.edge_weight is None:
            return None
        if "gcn_entries" not in self._ops:
            self._ops["gcn_entries"] = entry_weights(self.edge_weight, self.selection.gcn_pattern[1], self.selection.num_kept)
        return self._ops["gcn_entries"]

    def gcn_operator(self) -> SparseMatrix:
        if "gcn" not in self._ops:
            self._ops["gcn"] = self.selection.gcn_operator(self.edge_weight)
        return self._ops["gcn"]

    def mean_operator(self) -> SparseMatrix:
        if "mean" not in self._ops:
            self._ops["mean"] = self.selection.mean_operator(self.edge_weight)
        return self._ops["mean"]
