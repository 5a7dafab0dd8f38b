import pytest
import torch
from torch_geometric.nn import GCNConv as PygGCNConv

from gnnprune.graph import MaskedGraph
from gnnprune.nn import GCN
from helpers import tiny_graph


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


def test_reset_parameters_changes_weights_and_zeroes_bias():
    model = GCN(3, 4, 2)
    before = model.convs[0].lin.weight.clone()
    with torch.no_grad():
        model.convs[0].bias.fill_(1.0)
    model.reset_parameters()
    assert not torch.equal(before, model.convs[0].lin.weight)
    assert torch.all(model.convs[0].bias == 0)
