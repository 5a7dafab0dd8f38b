import pytest
import torch
from torch_geometric.nn import GCNConv as PygGCNConv

from gnnprune.features import NodeFeatures
from gnnprune.graph import EdgeSet, MaskedGraph
from gnnprune.nn import GCN
from tests.conftest import tiny_graph


@pytest.mark.parametrize("in_channels,out_channels", [(5, 3), (3, 7)])  # transform first / propagate first
def test_gcn_layer_matches_pyg_gcnconv(in_channels, out_channels):
    data = tiny_graph(num_features=in_channels)
    model = GCN(in_channels, 4, out_channels, num_layers=1, dropout=0.0).eval()
    assert model.convs[0].aggregates_first == (in_channels < out_channels)
    pyg = PygGCNConv(in_channels, out_channels)
    with torch.no_grad():
        pyg.lin.weight.copy_(model.convs[0].lin.weight.t())
        pyg.bias.copy_(torch.randn(out_channels))
        model.convs[0].bias.copy_(pyg.bias)
    ours = model(data.x, MaskedGraph.full(data.edges))
    theirs = pyg(data.x, data.edges.directed())
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_sparse_and_dense_features_give_the_same_output():
    data = tiny_graph(num_features=8)
    x = data.x * (torch.rand(6, 8) < 0.3)
    model = GCN(8, 16, 2).eval()
    graph = MaskedGraph.full(data.edges)
    sparse = NodeFeatures(x, sparse=True).select().gated()
    assert torch.allclose(model(sparse, graph), model(x, graph), atol=1e-6)


def test_masking_edges_equals_deleting_them_in_the_model():
    data = tiny_graph()
    keep = torch.tensor([1, 1, 0, 1, 0, 1, 1], dtype=torch.bool)
    model = GCN(3, 8, 2, num_layers=3).eval()
    masked = model(data.x, MaskedGraph(data.edges.select(keep)))
    deleted = model(data.x, MaskedGraph.full(EdgeSet(data.edges.edges[:, keep], 6)))
    assert torch.allclose(masked, deleted, atol=1e-6)


def test_node_permutation_permutes_the_output():
    data = tiny_graph()
    keep = torch.tensor([1, 0, 1, 1, 1, 0, 1], dtype=torch.bool)
    model = GCN(3, 8, 2).eval()
    out = model(data.x, MaskedGraph(data.edges.select(keep)))
    perm = torch.tensor([3, 5, 0, 1, 4, 2])  # new node i is old node perm[i]
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(6)
    kept = data.edges.edges[:, keep]
    permuted_edges = EdgeSet.from_edge_index(inverse[kept], 6)
    out_p = model(data.x[perm], MaskedGraph.full(permuted_edges))
    assert torch.allclose(out_p, out[perm], atol=1e-6)


def test_reset_parameters_changes_weights_and_zeroes_bias():
    model = GCN(3, 4, 2)
    before = model.convs[0].lin.weight.clone()
    with torch.no_grad():
        model.convs[0].bias.fill_(1.0)
    model.reset_parameters()
    assert not torch.equal(before, model.convs[0].lin.weight)
    assert torch.all(model.convs[0].bias == 0)
