"""Kept feature columns: dense features are stored narrow and gated through the weight rows."""
import pytest
import torch

from gnnprune.features import NodeFeatures
from gnnprune.sparse import CSRPattern, DenseColumns, SparseMatrix, dropout, propagate_first


def _dense_features(n=9, f=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, f, generator=g)


def test_dense_columns_product_and_gradients_equal_the_explicit_masked_matrix():
    x = _dense_features()
    keep = torch.tensor([True, False, True, True, False, True])
    gate_a = torch.rand(6, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    gate_b = gate_a.detach().clone().requires_grad_(True)
    w_a = torch.randn(6, 4, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    w_b = w_a.detach().clone().requires_grad_(True)

    narrow = NodeFeatures(x, sparse=False).select(keep).gated(gate_a)
    assert isinstance(narrow, DenseColumns)
    assert narrow.values.shape == (9, 4) and narrow.shape == (9, 6)
    out_a = narrow @ w_a
    out_b = (x * keep.float() * gate_b) @ w_b
    assert torch.allclose(out_a, out_b, atol=1e-6)
    target = torch.randn(9, 4, generator=torch.Generator().manual_seed(3))
    (out_a * target).sum().backward()
    (out_b * target).sum().backward()
    assert torch.allclose(gate_a.grad, gate_b.grad, atol=1e-5)
    assert torch.allclose(w_a.grad[keep], w_b.grad[keep], atol=1e-5)
    assert torch.equal(w_a.grad[~keep], torch.zeros(2, 4))  # pruned rows never see the input
    assert torch.allclose(narrow.to_dense(), x * keep.float() * gate_a.detach(), atol=1e-6)


def test_all_columns_without_a_gate_is_the_plain_tensor_and_rows_select_nodes():
    x = _dense_features()
    selection = NodeFeatures(x, sparse=False).select()
    assert selection.gated() is x
    keep = torch.tensor([False, True, True, False, True, True])
    nodes = torch.tensor([4, 0, 7])
    gate = torch.rand(6)
    rows = NodeFeatures(x, sparse=False).select(keep).rows(nodes, gate)
    assert torch.allclose(rows.to_dense(), (x * keep.float() * gate)[nodes], atol=1e-6)


def test_propagation_and_dropout_act_on_the_stored_block():
    x = _dense_features()
    keep = torch.tensor([True, True, False, False, True, True])
    gated = NodeFeatures(x, sparse=False).select(keep).gated(torch.rand(6))
    pattern, _ = CSRPattern.from_coo(torch.tensor([0, 1, 2, 8]), torch.tensor([1, 0, 2, 3]), (9, 9))
    operator = SparseMatrix(pattern, torch.tensor([0.5, 2.0, 1.0, -1.0]))
    propagated = propagate_first(operator, gated)
    assert isinstance(propagated, DenseColumns)
    assert torch.allclose(propagated.to_dense(), operator.pattern.to_dense(operator.values) @ gated.to_dense(), atol=1e-6)
    torch.manual_seed(0)
    dropped = dropout(gated, 0.5, True)
    assert isinstance(dropped, DenseColumns) and torch.equal(dropped.columns, gated.columns)
    kept = dropped.values != 0
    assert 0 < int(kept.sum()) < kept.numel()
    assert torch.allclose(dropped.values[kept], 2 * gated.values[kept])
    assert dropout(gated, 0.5, False) is gated


def test_weight_with_the_wrong_number_of_rows_is_refused():
    gated = NodeFeatures(_dense_features(), sparse=False).select(torch.tensor([True] * 5 + [False])).gated()
    with pytest.raises(ValueError, match="6 columns"):
        gated @ torch.ones(5, 2)
