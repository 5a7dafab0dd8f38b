import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import GCN2Conv as PygGCN2Conv

from gnnprune.graph import MaskedGraph
from gnnprune.macs import gcn_operator_entries
from gnnprune.nn import build_model
from gnnprune.nn.gcn2 import GCN2Conv, GCNII
from helpers import tiny_graph


def _model(in_channels=3, hidden=8, out=2, layers=4, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = GCNII(in_channels, hidden, out, num_layers=layers, dropout=0.0, **kwargs).eval()
    with torch.no_grad():  # non-zero biases so that they are exercised too
        model.lin_in.bias.normal_()
        model.lin_out.bias.normal_()
    return model


def _pyg_forward(model: GCNII, x, edge_index, edge_weight=None):
    """The same network built from PyG's GCN2Conv with copied weights."""
    h = x0 = F.relu(x @ model.lin_in.weight + model.lin_in.bias)
    for layer, conv in enumerate(model.convs, start=1):
        pyg = PygGCN2Conv(conv.lin.weight.size(0), alpha=conv.alpha, theta=0.5, layer=layer).double()
        with torch.no_grad():
            pyg.weight1.copy_(conv.lin.weight)  # both store [in, out] and compute h @ W
        h = F.relu(pyg(h, x0, edge_index, edge_weight))
    return h @ model.lin_out.weight + model.lin_out.bias


def test_beta_follows_the_identity_mapping_schedule():
    model = GCNII(3, 4, 2, num_layers=5, theta=0.5)
    assert [conv.beta for conv in model.convs] == pytest.approx([math.log(0.5 / l + 1) for l in range(1, 6)])
    with pytest.raises(ValueError):
        GCNII(3, 4, 2, num_layers=0)
    with pytest.raises(ValueError):
        GCN2Conv(4, 0.1, 0.5, layer=0)


def test_matches_pyg_gcn2conv_with_copied_weights_and_edge_weights():
    data = tiny_graph(num_features=5)
    model = _model(5, 6, 3, layers=6).double()
    x = data.x.double()
    w = torch.rand(data.edges.num_edges, dtype=torch.float64) + 0.1
    ours = model(x, MaskedGraph(data.edges.select(), w))
    theirs = _pyg_forward(model, x, data.edges.directed(), w.repeat(2))
    assert torch.allclose(ours, theirs, atol=1e-5)
    # and on a masked graph: PyG sees only the kept edges
    keep = torch.tensor([1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
    ours = model(x, MaskedGraph(data.edges.select(keep), w[keep]))
    theirs = _pyg_forward(model, x, data.edges.directed(keep), w[keep].repeat(2))
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_prunable_weights_and_input_weights():
    model = GCNII(5, 4, 3, num_layers=3)
    names = set(model.prunable_weights())
    assert names == {"lin_in.weight", "lin_out.weight", *(f"convs.{i}.lin.weight" for i in range(3))}
    assert model.lin_in.weight.shape == (5, 4)  # rows index input features
    assert set(model.input_weight_names) <= names


def test_param_groups_decay_the_deep_layers_apart():
    model = GCNII(5, 4, 3, num_layers=3, conv_weight_decay=0.01)
    groups = model.param_groups(5e-4)
    assert [g["weight_decay"] for g in groups] == [0.01, 5e-4]
    assert {id(p) for p in groups[0]["params"]} == {id(conv.lin.weight) for conv in model.convs}
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter exactly once


def test_macs_count_every_layer():
    model = GCNII(10, 4, 3, num_layers=2)
    n, e = 6, 7
    kept = {name: p.numel() for name, p in model.prunable_weights().items()}
    layers = model.macs(n, e, kept)
    assert [layer["layer"] for layer in layers] == ["lin_in", "convs.0", "convs.1", "lin_out"]
    entries = gcn_operator_entries(e, n)
    assert layers[0] == {"layer": "lin_in", "transform": 40 * n, "aggregation": 0}
    assert layers[1] == {"layer": "convs.0", "transform": 16 * n, "aggregation": entries * 4}
    assert layers[3] == {"layer": "lin_out", "transform": 12 * n, "aggregation": 0}
    halved = model.macs(n, 3, {name: k // 2 for name, k in kept.items()})
    assert all(h["transform"] <= d["transform"] and h["aggregation"] <= d["aggregation"]
               for h, d in zip(halved, layers))


def test_reset_parameters_redraws_weights_and_zeroes_biases():
    model = GCNII(3, 4, 2, num_layers=2)
    before = model.convs[0].lin.weight.clone()
    with torch.no_grad():
        model.lin_in.bias.fill_(1.0)
    model.reset_parameters()
    assert not torch.equal(before, model.convs[0].lin.weight)
    assert torch.all(model.lin_in.bias == 0)


def test_registered_with_paper_hyperparameters():
    model = build_model("gcn2", 5, 3)
    assert isinstance(model, GCNII)
    assert model.convs[0].alpha == pytest.approx(0.1)
    assert model.convs[0].beta == pytest.approx(math.log(0.5 + 1))
    assert model.convs[0].lin.weight.shape == (64, 64)
