import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import SAGEConv as PygSAGEConv

from gnnprune.copruning import EDGES, FEATURES, CoPruner
from gnnprune.graph import MaskedGraph
from gnnprune.nn import build_model
from gnnprune.nn.sage import GraphSAGE, SAGEConv
from helpers import tiny_graph


def _copy_to_pyg(conv: SAGEConv, pyg: PygSAGEConv) -> None:
    with torch.no_grad():
        pyg.lin_l.weight.copy_(conv.lin_neigh.weight.t())
        pyg.lin_r.weight.copy_(conv.lin_root.weight.t())
        pyg.lin_l.bias.copy_(torch.randn_like(pyg.lin_l.bias))
        conv.bias.copy_(pyg.lin_l.bias)


def test_two_layer_sage_matches_pyg_sageconv():
    data = tiny_graph(num_features=5)
    torch.manual_seed(0)
    model = GraphSAGE(5, 4, 3, num_layers=2).eval()
    pyg1, pyg2 = PygSAGEConv(5, 4), PygSAGEConv(4, 3)
    _copy_to_pyg(model.convs[0], pyg1)
    _copy_to_pyg(model.convs[1], pyg2)
    edge_index = data.edges.directed()
    theirs = pyg2(F.relu(pyg1(data.x, edge_index)), edge_index)
    ours = model(data.x, MaskedGraph.full(data.edges))
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_weighted_mean_matches_the_dense_formula():
    data = tiny_graph(num_features=4)
    torch.manual_seed(1)
    conv = SAGEConv(4, 3).double()
    with torch.no_grad():
        conv.bias.copy_(torch.randn(3))
    x = data.x.double()
    w = torch.rand(7, dtype=torch.double)
    adj = torch.zeros(6, 6, dtype=torch.double)
    u, v = data.edges.edges
    adj[u, v] = w
    adj[v, u] = w
    mean = (adj @ x) / adj.sum(1, keepdim=True)
    expected = x @ conv.lin_root.weight + mean @ conv.lin_neigh.weight + conv.bias
    assert torch.allclose(conv(x, MaskedGraph(data.edges.select(), w)), expected, atol=1e-10)


def test_node_without_kept_neighbours_uses_its_root_term_only():
    data = tiny_graph()
    torch.manual_seed(0)
    conv = SAGEConv(3, 4)
    with torch.no_grad():
        conv.bias.copy_(torch.randn(4))
    out = conv(data.x, MaskedGraph(data.edges.select(torch.zeros(7, dtype=torch.bool))))
    assert torch.allclose(out, data.x @ conv.lin_root.weight + conv.bias, atol=1e-6)


def test_probe_gradient_of_a_dead_edge_is_the_real_derivative_at_zero():
    data = tiny_graph(num_features=4)
    torch.manual_seed(0)
    model = GraphSAGE(4, 5, 2, dropout=0.0)
    pruner = CoPruner(model, data, learn_edge_weights=True)
    pruner.engine.prune(EDGES, 2, torch.tensor([0.0, 9, 9, 0, 9, 9, 9]))  # kill edges 0 and 3
    pruner.refresh()
    loss = lambda logits: F.cross_entropy(logits[data.train_mask], data.y[data.train_mask])  # noqa: E731
    probe = pruner.probe(loss)
    model.eval().double()
    x = data.x.double()
    base = (torch.sigmoid(pruner.edge_logit) * pruner.engine.mask(EDGES)).detach().double()
    for e in (0, 3, 5):
        eps = 1e-6
        plus, minus = base.clone(), base.clone()
        plus[e] += eps
        minus[e] = minus[e] - eps if e == 5 else minus[e]  # dead edges: one-sided at 0
        fd = (loss(model(x, MaskedGraph(data.edges.select(), plus)))
              - loss(model(x, MaskedGraph(data.edges.select(), minus)))) / (plus[e] - minus[e])
        assert probe.edge_grad[e].item() == pytest.approx(fd.item(), rel=1e-3, abs=1e-7)
    assert probe.edge_grad[0] != 0 and probe.edge_grad[3] != 0


def test_edge_dropout_drops_whole_edges_in_training_only():
    data = tiny_graph()
    torch.manual_seed(0)
    model = GraphSAGE(3, 8, 2, dropout=0.0, edge_dropout=0.5)
    w = torch.rand(7) * 0.9 + 0.05
    graph = MaskedGraph(data.edges.select(), w)
    torch.manual_seed(123)
    trained = model.train()(data.x, graph)
    torch.manual_seed(123)
    keep = torch.rand(7) >= 0.5
    assert 0 < int(keep.sum()) < 7
    thinned = model.eval()(data.x, MaskedGraph(data.edges.select(keep), w[keep]))
    assert torch.allclose(trained, thinned, atol=1e-6)
    assert torch.equal(model(data.x, graph), model(data.x, graph))  # eval: deterministic, all edges
    with pytest.raises(ValueError, match="edge_dropout"):
        GraphSAGE(3, 8, 2, edge_dropout=1.0)


def test_registry_defaults_and_input_weights():
    model = build_model("sage", 10, 3)
    assert isinstance(model, GraphSAGE)
    assert model.edge_dropout == 0.5 and model.dropout == 0.5 and model.convs[0].bias.numel() == 256
    weights = model.prunable_weights()
    assert set(weights) == {f"convs.{i}.{p}.weight" for i in (0, 1) for p in ("lin_root", "lin_neigh")}
    assert set(model.input_weight_names) == {"convs.0.lin_root.weight", "convs.0.lin_neigh.weight"}
    assert all(weights[name].size(0) == 10 for name in model.input_weight_names)


def test_pruned_feature_removes_the_row_of_both_input_weights():
    data = tiny_graph(num_features=4)
    torch.manual_seed(0)
    model = GraphSAGE(4, 5, 2)
    pruner = CoPruner(model, data)
    pruner.engine.prune(FEATURES, 1, torch.tensor([9.0, 0.0, 9.0, 9.0]))
    pruner.refresh()
    for name in model.input_weight_names:
        assert bool((model.prunable_weights()[name][1] == 0).all())
        assert not bool(pruner.weight_mask(name)[1].any())


def test_macs_count_root_neighbour_transform_and_mean_aggregation():
    model = GraphSAGE(10, 4, 3)
    full = {name: p.numel() for name, p in model.prunable_weights().items()}
    n, e = 6, 7
    layers = model.macs(n, e, full)
    assert [layer["layer"] for layer in layers] == ["convs.0", "convs.1"]
    assert layers[0] == {"layer": "convs.0", "transform": 2 * 10 * 4 * n, "aggregation": 2 * e * 4}
    assert layers[1] == {"layer": "convs.1", "transform": 2 * 4 * 3 * n, "aggregation": 2 * e * 3}
    half = {name: k // 2 for name, k in full.items()}
    assert model.macs(n, 3, half)[0] == {"layer": "convs.0", "transform": 40 * n, "aggregation": 2 * 3 * 4}
