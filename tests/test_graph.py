import pytest
import torch
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from gnnprune.graph import EdgeSet, MaskedGraph
from helpers import tiny_graph


def test_from_edge_index_collapses_directions_duplicates_and_self_loops():
    edge_index = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 2, 0]])
    es = EdgeSet.from_edge_index(edge_index, 4)
    assert es.edges.tolist() == [[0, 0, 1], [1, 3, 2]]


def test_edge_set_validates():
    with pytest.raises(ValueError, match="u < v"):
        EdgeSet(torch.tensor([[1], [0]]), 2)
    with pytest.raises(ValueError, match="out of range"):
        EdgeSet(torch.tensor([[0], [5]]), 3)


def test_directed_edges_are_symmetric_for_any_mask():
    data = tiny_graph()
    keep = torch.tensor([1, 0, 1, 1, 0, 1, 0], dtype=torch.bool)
    sel = data.edges.select(keep)
    pairs = set(map(tuple, sel.edge_index.t().tolist()))
    assert len(pairs) == 2 * int(keep.sum())
    assert all((v, u) in pairs for u, v in pairs)


def test_gcn_operator_matches_pyg_gcn_norm():
    data = tiny_graph()
    w = torch.rand(data.edges.num_edges, dtype=torch.float64) + 0.1
    op = data.edges.select().gcn_operator(w).to_dense()
    ei = data.edges.directed()
    ei_n, w_n = gcn_norm(ei, w.repeat(2), num_nodes=6, add_self_loops=True)
    expected = torch.zeros(6, 6, dtype=torch.float64)
    expected.index_put_((ei_n[1], ei_n[0]), w_n, accumulate=True)
    assert torch.allclose(op, expected)
    assert torch.allclose(op, op.t())


def test_masking_an_edge_equals_deleting_it():
    data = tiny_graph()
    keep = torch.ones(7, dtype=torch.bool)
    keep[[1, 4]] = False
    x = torch.randn(6, 4)
    masked = data.edges.select(keep)
    deleted = EdgeSet(data.edges.edges[:, keep], 6).select()
    for op in ("gcn_operator", "mean_operator"):
        assert torch.allclose(getattr(masked, op)() @ x, getattr(deleted, op)() @ x, atol=1e-6)


def test_zero_weight_edge_equals_absent_edge():
    """The probe pass relies on this: dead edges present at weight 0 change nothing."""
    data = tiny_graph()
    keep = torch.ones(7, dtype=torch.bool)
    keep[2] = False
    w = torch.ones(7)
    w[2] = 0.0
    x = torch.randn(6, 3)
    full = MaskedGraph(data.edges.select(), w)
    pruned = MaskedGraph(data.edges.select(keep))
    assert torch.allclose(full.gcn_operator() @ x, pruned.gcn_operator() @ x, atol=1e-6)
    assert torch.allclose(full.mean_operator() @ x, pruned.mean_operator() @ x, atol=1e-6)


def test_isolated_node_keeps_its_self_loop():
    data = tiny_graph()
    keep = torch.zeros(7, dtype=torch.bool)
    x = torch.randn(6, 2)
    assert torch.allclose(data.edges.select(keep).gcn_operator() @ x, x)
    assert torch.allclose(data.edges.select(keep).mean_operator() @ x, torch.zeros(6, 2))
