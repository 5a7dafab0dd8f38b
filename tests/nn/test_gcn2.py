import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import GCN2Conv as PygGCN2Conv

from gnnprune.copruning import CoPruner, PruneTargets
from gnnprune.features import NodeFeatures
from gnnprune.graph import EdgeSet, MaskedGraph
from gnnprune.macs import gcn_operator_entries
from gnnprune.masks import kept_count
from gnnprune.methods import CGP, CGPConfig
from gnnprune.nn import build_model
from gnnprune.nn.gcn2 import GCN2Conv, GCNII
from gnnprune.training import TrainConfig, train
from tests.conftest import tiny_graph


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


def test_full_masks_give_the_plain_model_and_sparse_features_the_dense_ones():
    data = tiny_graph(num_features=8)
    data.x = data.x * (torch.rand(6, 8, generator=torch.Generator().manual_seed(1)) < 0.3)
    model = _model(8)
    plain = model(data.x, MaskedGraph.full(data.edges))
    pruner = CoPruner(model, data)
    assert torch.allclose(model(pruner.inputs(), pruner.graph()), plain, atol=1e-6)
    sparse = NodeFeatures(data.x, sparse=True).select().gated()
    assert torch.allclose(model(sparse, MaskedGraph.full(data.edges)), plain, atol=1e-6)


def test_masking_edges_equals_deleting_them():
    data = tiny_graph()
    keep = torch.tensor([1, 1, 0, 1, 0, 1, 1], dtype=torch.bool)
    model = _model(layers=8)
    masked = model(data.x, MaskedGraph(data.edges.select(keep)))
    deleted = model(data.x, MaskedGraph.full(EdgeSet(data.edges.edges[:, keep], 6)))
    assert torch.allclose(masked, deleted, atol=1e-6)


def test_zero_edge_weight_equals_absent_edge():
    data = tiny_graph()
    w = torch.rand(7) + 0.1
    keep = torch.ones(7, dtype=torch.bool)
    keep[[2, 5]] = False
    model = _model(layers=8)
    zeroed = model(data.x, MaskedGraph(data.edges.select(), w * keep))
    absent = model(data.x, MaskedGraph(data.edges.select(keep), w[keep]))
    assert torch.allclose(zeroed, absent, atol=1e-6)


def test_node_permutation_permutes_the_output():
    data = tiny_graph()
    keep = torch.tensor([1, 0, 1, 1, 1, 0, 1], dtype=torch.bool)
    model = _model(layers=5)
    out = model(data.x, MaskedGraph(data.edges.select(keep)))
    perm = torch.tensor([3, 5, 0, 1, 4, 2])  # new node i is old node perm[i]
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(6)
    permuted_edges = EdgeSet.from_edge_index(inverse[data.edges.edges[:, keep]], 6)
    out_p = model(data.x[perm], MaskedGraph.full(permuted_edges))
    assert torch.allclose(out_p, out[perm], atol=1e-6)


def test_gradients_reach_every_edge_weight_and_weight():
    data = tiny_graph()
    model = _model(layers=3)
    w = torch.full((7,), 0.9, requires_grad=True)
    logits = model(data.x, MaskedGraph(data.edges.select(), w))
    F.cross_entropy(logits, data.y).backward()
    assert w.grad is not None and bool((w.grad != 0).all())
    for name, p in model.prunable_weights().items():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


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


def test_cgp_smoke_reaches_exact_sparsities_and_learns(small_csbm):
    torch.manual_seed(0)
    data = small_csbm
    model = GCNII(data.num_features, 32, data.num_classes, num_layers=3, dropout=0.2)
    pruner = CoPruner(model, data, learn_edge_weights=True, learn_feature_gates=True)
    method = CGP(CGPConfig(prune_start=4, prune_end=24, update_every=5),
                 PruneTargets(weights=0.8, edges=0.3, features=0.3))
    result = train(model, data, pruner, method,
                   TrainConfig(epochs=40, lr=0.02, seed=0, pseudo_label_weight=0.3, pseudo_label_warmup=10, gate_lr=0.1),
                   progress=False)
    e = pruner.engine
    assert e.site("edges").live == kept_count(data.edges.num_edges, 0.3)
    assert e.site("features").live == kept_count(data.num_features, 0.3)
    for site in e.sites("weight"):
        assert site.live == kept_count(site.numel, 0.8)
    assert result.best_epoch >= 24
    assert result.test > 0.6  # chance is 1/3
