"""Node features with prunable columns and a per-column gate.

Sparse feature matrices (bag-of-words data such as Cora) are kept as a
:class:`~gnnprune.sparse.SparseMatrix` restricted to the stored entries of kept columns, so
the first layer's cost follows the kept non-zeros. Dense matrices are stored narrow, kept
columns only (:class:`~gnnprune.sparse.DenseColumns`), so there too the cost follows the kept
features; in both cases the gate scales weight rows rather than the ``[N, F]`` input.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

from .sparse import CSRPattern, DenseColumns, SparseMatrix, row_entries

SPARSE_DENSITY = 0.1  # below this fraction of non-zeros, features are stored sparse


class NodeFeatures:
    """``[N, F]`` node features.

    Args:
        x: dense ``[N, F]`` float tensor.
        sparse: store sparse; default: when fewer than 10% of entries are non-zero.
    """

    def __init__(self, x: Tensor, sparse: bool | None = None) -> None:
        if x.dim() != 2:
            raise ValueError(f"features must be [N, F], got {tuple(x.shape)}")
        self.shape = (int(x.size(0)), int(x.size(1)))
        self.sparse = bool((x != 0).float().mean() < SPARSE_DENSITY) if sparse is None else sparse
        if self.sparse:
            row, col = x.nonzero(as_tuple=True)
            self._row, self._col, self._val = row, col, x[row, col].float()
            self.dense = None
        else:
            self.dense = x.float()

    @property
    def num_features(self) -> int:
        return self.shape[1]

    @functools.cached_property
    def column_l1(self) -> Tensor:
        """``[F]``: :math:`\\sum_i |x_{if}|` of every column, over all nodes (computed once)."""
        if self.dense is not None:
            return self.dense.abs().sum(0)
        return torch.zeros(self.shape[1]).index_add_(0, self._col, self._val.abs())

    def select(self, keep: Tensor | None = None) -> "FeatureSelection":
        return FeatureSelection(self, keep)


class FeatureSelection:
    """The kept columns of :class:`NodeFeatures`, with the pattern built once."""

    def __init__(self, features: NodeFeatures, keep: Tensor | None) -> None:
        self.features = features
        n, f = features.shape
        self.keep = torch.ones(f, dtype=torch.bool) if keep is None else keep.bool()
        if self.keep.numel() != f:
            raise ValueError(f"feature mask has {self.keep.numel()} entries for {f} features")
        if features.sparse:
            entries = self.keep[features._col].nonzero().view(-1)
            pattern, order = CSRPattern.from_coo(features._row[entries], features._col[entries], (n, f))
            self._pattern = pattern
            self._base = features._val[entries][order]
        else:
            self._columns = None if bool(self.keep.all()) else self.keep.nonzero().view(-1)
            self._values = features.dense if self._columns is None else features.dense.index_select(1, self._columns)

    def gated(self, gate: Tensor | None = None) -> Tensor | SparseMatrix | DenseColumns:
        """The feature matrix with dead columns removed and live column ``j`` scaled by ``gate[j]``."""
        if self.features.sparse:
            return SparseMatrix(self._pattern, self._base, gate)
        return self._dense(self._values, gate)

    def _dense(self, values: Tensor, gate: Tensor | None) -> Tensor | DenseColumns:
        if gate is None and self._columns is None:
            return values
        return DenseColumns(values, self.features.shape[1], self._columns, gate)

    def rows(self, nodes: Tensor, gate: Tensor | None = None) -> Tensor | SparseMatrix | DenseColumns:
        """:meth:`gated` restricted to the rows ``nodes`` (``[len(nodes), F]``), for mini-batches."""
        if not self.features.sparse:
            return self._dense(self._values[nodes], gate)
        local_row, entries, _ = row_entries(self._pattern.crow, nodes)
        pattern, order = CSRPattern.from_coo(local_row, self._pattern.col[entries], (nodes.numel(), self.features.shape[1]))
        return SparseMatrix(pattern, self._base[entries][order], gate)
