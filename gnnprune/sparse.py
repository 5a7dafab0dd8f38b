"""Sparse matrices with a fixed pattern and differentiable values.

A :class:`CSRPattern` is the sparsity pattern of an ``n_rows x n_cols`` matrix in
compressed-row form, together with the pattern of its transpose. It is built once
(e.g. whenever an edge mask changes) and reused for every step in between, while the
non-zero *values* may change at every step and carry gradients.

:func:`sparse_matmul` computes ``Y = A @ X`` for ``A = (pattern, values)``. Its
backward pass returns

.. math::
    \\frac{\\partial L}{\\partial X} = A^\\top G, \\qquad
    \\frac{\\partial L}{\\partial a_{ij}} = \\langle G_{i,:}, X_{j,:} \\rangle,

with ``G = dL/dY``. The second term (a sampled dense-dense product) is what makes
learned edge weights and feature gates trainable; it is only computed when the values
require a gradient. Cost is ``O(nnz * d)`` in both directions, so the cost of
propagation follows the number of kept entries.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from .dropout import dropout as dense_dropout

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


@dataclass(frozen=True, eq=False)
class CSRPattern:
    """Row-compressed sparsity pattern of a matrix and of its transpose.

    Attributes:
        shape: ``(n_rows, n_cols)``.
        crow: row pointers, shape ``[n_rows + 1]``.
        col: column index of each stored entry, shape ``[nnz]``.
        row: row index of each stored entry, shape ``[nnz]``.
        t_crow, t_col: the same for the transpose.
        t_perm: stored entry ``k`` of the transpose is stored entry ``t_perm[k]`` of the matrix.
    """

    shape: tuple[int, int]
    crow: Tensor
    col: Tensor
    row: Tensor
    t_crow: Tensor
    t_col: Tensor
    t_perm: Tensor

    @property
    def nnz(self) -> int:
        return int(self.col.numel())

    @staticmethod
    def from_coo(row: Tensor, col: Tensor, shape: tuple[int, int]) -> tuple["CSRPattern", Tensor]:
        """Build a pattern from coordinates (duplicates are kept as separate entries).

        Returns:
            ``(pattern, order)`` where ``order[k]`` is the input position of stored entry ``k``;
            values given in input order are put in pattern order with ``values[order]``.
        """
        n_rows, n_cols = shape
        row = row.long()
        col = col.long()
        order = _lexsort(row, col, n_cols)
        row_s, col_s = row[order], col[order]
        t_perm = _lexsort(col_s, row_s, n_rows)
        pattern = CSRPattern(
            shape=(n_rows, n_cols),
            crow=row_pointers(row_s, n_rows),
            col=col_s.contiguous(),
            row=row_s.contiguous(),
            t_crow=row_pointers(col_s[t_perm], n_cols),
            t_col=row_s[t_perm].contiguous(),
            t_perm=t_perm,
        )
        return pattern, order

    @functools.cached_property
    def kernel_index(self) -> tuple[Tensor, Tensor]:
        """``(crow, col)`` as the CPU kernels take them: ``int32`` where every index fits.

        torch's CSR products on CPU (MKL) work on 32-bit indices and convert 64-bit ones on every
        call: at ogbn-arxiv size (2.5M entries, width 40, 2 threads) 19.9 ms instead of 17.0 ms
        per ``addmm`` on an idle machine, 72 ms instead of 32 ms on a busy one. Built once per
        pattern.
        """
        return _kernel_index(self.crow, self.col, self.shape[1])

    @functools.cached_property
    def kernel_index_t(self) -> tuple[Tensor, Tensor]:
        """:attr:`kernel_index` of the transpose."""
        return _kernel_index(self.t_crow, self.t_col, self.shape[0])

    def to_dense(self, values: Tensor) -> Tensor:
        out = torch.zeros(self.shape, dtype=values.dtype, device=values.device)
        out.index_put_((self.row, self.col), values, accumulate=True)
        return out


def _kernel_index(crow: Tensor, col: Tensor, n_cols: int) -> tuple[Tensor, Tensor]:
    if max(int(crow[-1]), crow.numel(), n_cols) < 2 ** 31:
        return crow.to(torch.int32), col.to(torch.int32)
    return crow, col


def _lexsort(primary: Tensor, secondary: Tensor, n_secondary: int) -> Tensor:
    key = primary * max(n_secondary, 1) + secondary
    return torch.sort(key, stable=True).indices


def row_pointers(rows: Tensor, n_rows: int) -> Tensor:
    """CSR row pointers ``[n_rows + 1]`` of entries whose row indices, once sorted, are ``rows``."""
    crow = torch.zeros(n_rows + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=n_rows).cumsum(0)
    return crow


def row_entries(crow: Tensor, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The stored entries of some rows of a CSR matrix, row after row.

    Returns:
        ``(owner, entries, offset)``: ``entries`` are stored-entry indices, ``owner[k]`` the
        position in ``rows`` of the row that entry ``k`` belongs to and ``offset[k]`` its place
        within that row (0, 1, ...).
    """
    start = crow[rows]
    count = crow[rows + 1] - start
    owner = torch.repeat_interleave(torch.arange(rows.numel(), device=crow.device), count)
    offset = torch.arange(owner.numel(), device=crow.device) - torch.repeat_interleave(count.cumsum(0) - count, count)
    return owner, start[owner] + offset, offset


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def _spmm(matrix: Tensor, dense: Tensor, add: Tensor | None = None, alpha: float = 1.0, beta: float = 1.0) -> Tensor:
    """``beta * add + alpha * (matrix @ dense)`` for a CSR ``matrix`` and a 2-D ``dense``, in one call.

    Without ``add`` the product is written into uninitialised memory: ``matrix @ dense``
    zero-fills its output first, while ``addmm`` with ``beta=0`` ignores its input (NaN included)
    and writes every output entry, rows without stored entries too. At ogbn-arxiv size (width
    128) that saves 7-14 ms per product, the larger share of the product's cost once few edges
    are kept (2 threads: 26.2 ms -> 17.7 ms at 20% of the edges). With ``add`` (broadcastable
    to the output, e.g. a bias or APPNP's teleport term) the scaling and the sum need no extra
    passes over ``[N, d]``.
    """
    if dense.dim() != 2:
        out = alpha * (matrix @ dense)
        return out if add is None else out + beta * add
    if add is None:
        out = dense.new_empty(matrix.size(0), dense.size(1))
        return torch.addmm(out, matrix, dense, beta=0.0, alpha=alpha, out=out)
    return torch.addmm(add, matrix, dense, beta=beta, alpha=alpha)


def sampled_matmul(pattern: CSRPattern, left: Tensor, right: Tensor, alpha: float = 1.0) -> Tensor:
    """``alpha * (left @ right.T)`` at the stored entries of ``pattern``, in pattern order (SDDMM)."""
    if pattern.nnz == 0:
        return left.new_zeros(0)
    like = _csr(*pattern.kernel_index, left.new_zeros(pattern.nnz), pattern.shape)
    return torch.sparse.sampled_addmm(like, left.contiguous(), right.t(), beta=0.0, alpha=alpha).values()


class _SparseMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pattern: CSRPattern, values: Tensor, dense: Tensor, add: Tensor | None,
                alpha: float, beta: float) -> Tensor:
        ctx.pattern, ctx.alpha, ctx.beta = pattern, alpha, beta
        ctx.add_shape = None if add is None else add.shape
        ctx.save_for_backward(values, dense)
        return _spmm(_csr(*pattern.kernel_index, values, pattern.shape), dense, add, alpha, beta)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        pattern: CSRPattern = ctx.pattern
        values, dense = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_values = grad_dense = grad_add = None
        if ctx.needs_input_grad[1]:
            d = dense if dense.dim() == 2 else dense.unsqueeze(1)
            g = grad_out if grad_out.dim() == 2 else grad_out.unsqueeze(1)
            grad_values = sampled_matmul(pattern, g, d, ctx.alpha)
        if ctx.needs_input_grad[2]:
            shape_t = (pattern.shape[1], pattern.shape[0])
            transpose = _csr(*pattern.kernel_index_t, values[pattern.t_perm], shape_t)
            grad_dense = _spmm(transpose, grad_out, alpha=ctx.alpha)
        if ctx.needs_input_grad[3]:
            grad_add = (ctx.beta * grad_out).sum_to_size(ctx.add_shape)  # undo add's broadcast
        return None, grad_values, grad_dense, grad_add, None, None


def sparse_matmul(pattern: CSRPattern, values: Tensor, dense: Tensor, add: Tensor | None = None,
                  alpha: float = 1.0, beta: float = 1.0) -> Tensor:
    """``beta * add + alpha * (A @ dense)`` where ``A`` has the given pattern and ``values``.

    Args:
        pattern: sparsity pattern of ``A`` (``n_rows x n_cols``).
        values: ``[nnz]`` non-zero values in pattern order; may require grad.
        dense: ``[n_cols, d]`` dense matrix; may require grad.
        add: optional tensor broadcastable to ``[n_rows, d]`` (a bias ``[d]``, a residual
            ``[n_rows, d]``); may require grad. Without it the result is ``alpha * (A @ dense)``.
        alpha, beta: scales of the product and of ``add``.

    Returns:
        ``[n_rows, d]``.
    """
    if values.numel() != pattern.nnz:
        raise ValueError(f"expected {pattern.nnz} values for this pattern, got {values.numel()}")
    return _SparseMatmul.apply(pattern, values, dense.contiguous(), add, float(alpha), float(beta))


@dataclass(frozen=True, eq=False)
class SparseMatrix:
    """A sparse matrix ``A = S diag(column_scale)`` as a pattern, values and an optional column scale.

    ``A @ X`` is differentiable in the values, the column scale and ``X``. A column scale
    (e.g. a feature gate) is applied to the rows of ``X`` instead of the stored values, so its
    gradient costs one ``[n_cols, d]`` product instead of a per-entry sampled product.
    """

    pattern: CSRPattern
    values: Tensor
    column_scale: Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.pattern.shape

    def __matmul__(self, dense: Tensor) -> Tensor:
        return self.addmm(None, dense)

    def addmm(self, add: Tensor | None, dense: Tensor, *, beta: float = 1.0, alpha: float = 1.0) -> Tensor:
        """``beta * add + alpha * (self @ dense)`` in one sparse product (as :func:`torch.addmm`).

        Fuses a bias or a residual into the product instead of two more passes over the output.
        """
        if self.column_scale is not None:
            dense = dense * self.column_scale.view(-1, *([1] * (dense.dim() - 1)))
        return sparse_matmul(self.pattern, self.values, dense, add, alpha, beta)

    def with_values(self, values: Tensor) -> "SparseMatrix":
        return SparseMatrix(self.pattern, values, self.column_scale)

    def to_dense(self) -> Tensor:
        dense = self.pattern.to_dense(self.values)
        return dense if self.column_scale is None else dense * self.column_scale


@dataclass(frozen=True, eq=False)
class DenseColumns:
    """Some columns of a dense ``[N, F]`` matrix, stored narrow, with an optional column scale.

    Represents ``X[:, columns] diag(column_scale[columns])`` (pruned feature columns removed,
    kept ones gated). ``self @ W`` multiplies the stored ``[N, len(columns)]`` block by the
    matching rows of ``W`` scaled by the gate, so the product costs ``N * len(columns) * d``
    and the gate's gradient comes from the ``[len(columns), d]`` weight gradient, without a
    gradient with respect to the ``[N, F]`` input. Row-wise linear maps (dropout, a
    propagation ``P @ X``) act on ``values`` and commute with the column selection and scale.

    Attributes:
        values: ``[N, len(columns)]`` (or ``[N, F]`` when ``columns`` is ``None``).
        num_columns: ``F``.
        columns: kept column indices in ``[0, F)``; ``None`` for all.
        column_scale: ``[F]`` per-column factor (e.g. a feature gate); ``None`` for 1.
    """

    values: Tensor
    num_columns: int
    columns: Tensor | None = None
    column_scale: Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.values.size(0)), self.num_columns

    def __matmul__(self, weight: Tensor) -> Tensor:
        if weight.size(0) != self.num_columns:
            raise ValueError(f"matrix with {self.num_columns} columns times weight with {weight.size(0)} rows")
        rows = weight if self.columns is None else weight.index_select(0, self.columns)
        if self.column_scale is not None:
            scale = self.column_scale if self.columns is None else self.column_scale.index_select(0, self.columns)
            rows = rows * scale.view(-1, *([1] * (rows.dim() - 1)))
        return self.values @ rows

    def with_values(self, values: Tensor) -> "DenseColumns":
        return DenseColumns(values, self.num_columns, self.columns, self.column_scale)

    def to_dense(self) -> Tensor:
        out = self.values.new_zeros(self.values.size(0), self.num_columns)
        index = torch.arange(self.num_columns) if self.columns is None else self.columns
        scale = torch.ones(()) if self.column_scale is None else self.column_scale[index]
        out[:, index] = self.values * scale
        return out


def propagate_first(operator: SparseMatrix, x: Tensor | DenseColumns) -> Tensor | DenseColumns:
    """``operator @ x`` for a dense input, keeping a :class:`DenseColumns` one narrow and gated."""
    if isinstance(x, DenseColumns):
        return x.with_values(operator @ x.values)
    return operator @ x


def dropout(x: Tensor | SparseMatrix | DenseColumns, p: float, training: bool) -> Tensor | SparseMatrix | DenseColumns:
    """Dropout for dense tensors, on the stored values of a :class:`SparseMatrix`, and on the
    stored block of a :class:`DenseColumns`.

    Dropping stored values only (as in Kipf & Welling's GCN) keeps the cost proportional
    to the number of non-zeros.
    """
    if isinstance(x, (SparseMatrix, DenseColumns)):
        if not training or p == 0.0:
            return x
        return x.with_values(dense_dropout(x.values, p))
    return dense_dropout(x, p, training)


def matmul(x: Tensor | SparseMatrix, weight: Tensor) -> Tensor:
    """``x @ weight`` for dense or sparse ``x``."""
    return x @ weight
