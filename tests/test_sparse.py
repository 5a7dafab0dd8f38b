import torch

from gnnprune.sparse import CSRPattern, SparseMatrix, dropout


def _random_sparse(n_rows=7, n_cols=5, nnz=15, seed=0):
    g = torch.Generator().manual_seed(seed)
    row = torch.randint(0, n_rows, (nnz,), generator=g)
    col = torch.randint(0, n_cols, (nnz,), generator=g)
    values = torch.randn(nnz, generator=g, dtype=torch.float64)
    pattern, order = CSRPattern.from_coo(row, col, (n_rows, n_cols))
    return pattern, values[order]


def test_matmul_and_gradients_match_dense():
    pattern, values = _random_sparse()
    values.requires_grad_(True)
    scale = torch.rand(5, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    out = SparseMatrix(pattern, values, scale) @ x
    dense = pattern.to_dense(values) * scale
    expected = dense @ x
    assert torch.allclose(out, expected)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, (values, scale, x), upstream)
    expected_grads = torch.autograd.grad(expected, (values, scale, x), upstream)
    for got, want in zip(grads, expected_grads):
        assert torch.allclose(got, want)


def test_duplicate_coordinates_add_up():
    pattern, order = CSRPattern.from_coo(torch.tensor([0, 0, 1]), torch.tensor([1, 1, 0]), (2, 2))
    values = torch.tensor([1.0, 2.0, 5.0])[order]
    assert torch.equal(SparseMatrix(pattern, values).to_dense(), torch.tensor([[0.0, 3.0], [5.0, 0.0]]))


def test_sparse_dropout_touches_only_stored_values():
    pattern, values = _random_sparse(nnz=2000, n_rows=100, n_cols=100)
    m = SparseMatrix(pattern, values.float())
    torch.manual_seed(0)
    dropped = dropout(m, 0.5, training=True)
    kept = dropped.values != 0
    assert 0.4 < kept.float().mean() < 0.6
    assert torch.allclose(dropped.values[kept], 2 * m.values[kept])
    assert dropout(m, 0.5, training=False) is m


def test_rows_and_columns_without_entries_give_exact_zeros_in_reused_memory():
    # Row 1 and column 2 have no entries; products are written into uninitialised memory,
    # so fill freed memory with NaN first: an output entry the kernel skipped would show it.
    pattern, order = CSRPattern.from_coo(torch.tensor([0, 0, 2, 3]), torch.tensor([0, 3, 1, 0]), (4, 4))
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])[order].requires_grad_(True)
    x = torch.randn(4, 33, requires_grad=True)
    for _ in range(3):
        poison = torch.full((64, 64), float("nan"))
        del poison
        out = SparseMatrix(pattern, values) @ x
        (grad_x,) = torch.autograd.grad(out, x, torch.ones_like(out))
        assert torch.equal(out[1], torch.zeros(33))
        assert torch.equal(grad_x[2], torch.zeros(33))
        assert torch.allclose(out, pattern.to_dense(values.detach()) @ x.detach())


def test_addmm_fuses_a_broadcast_or_full_term_with_exact_gradients():
    pattern, values = _random_sparse()
    values.requires_grad_(True)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    for add in (torch.randn(3, dtype=torch.float64, requires_grad=True),
                torch.randn(7, 3, dtype=torch.float64, requires_grad=True)):
        out = SparseMatrix(pattern, values).addmm(add, x, beta=0.1, alpha=0.9)
        expected = 0.1 * add + 0.9 * (pattern.to_dense(values) @ x)
        assert torch.allclose(out, expected)
        upstream = torch.randn_like(out)
        grads = torch.autograd.grad(out, (values, x, add), upstream)
        wanted = torch.autograd.grad(expected, (values, x, add), upstream)
        for got, want in zip(grads, wanted):
            assert got.shape == want.shape and torch.allclose(got, want)


def test_kernel_index_is_int32_copy_of_the_pattern_unless_an_index_would_overflow():
    from gnnprune.sparse import _kernel_index

    pattern, _ = CSRPattern.from_coo(torch.tensor([0, 2, 2]), torch.tensor([1, 0, 3]), (3, 4))
    crow, col = pattern.kernel_index
    assert crow.dtype == col.dtype == torch.int32
    assert crow.tolist() == pattern.crow.tolist() and col.tolist() == pattern.col.tolist()
    assert pattern.kernel_index is pattern.kernel_index  # built once
    t_crow, t_col = pattern.kernel_index_t
    assert t_crow.tolist() == pattern.t_crow.tolist() and t_col.dtype == torch.int32
    wide = _kernel_index(pattern.crow, pattern.col, 2 ** 31)
    assert wide[0].dtype == wide[1].dtype == torch.int64
