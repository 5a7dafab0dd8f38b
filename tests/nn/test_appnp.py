import pytest
import torch
from torch_geometric.nn import APPNP as PygAPPNP

from gnnprune.graph import MaskedGraph
from gnnprune.macs import gcn_operator_entries
from gnnprune.nn import MODELS, build_model
from gnnprune.nn.appnp import APPNP, PPRPropagation
from helpers import tiny_graph


def _mlp(model: APPNP, x: torch.Tensor) -> torch.Tensor:
    """The model's MLP output (eval mode), to feed a reference propagation."""
    h = x
    for i, lin in enumerate(model.lins):
        h = lin(h)
        if i < len(model.lins) - 1:
            h = torch.relu(h)
    return h


def test_appnp_matches_pyg_propagation_of_the_same_mlp_output():
    torch.manual_seed(0)
    data = tiny_graph(num_features=5)
    model = APPNP(5, 8, 3, num_layers=2, dropout=0.5, K=10, alpha=0.1).eval()
    ours = model(data.x, MaskedGraph.full(data.edges))
    theirs = PygAPPNP(K=10, alpha=0.1)(_mlp(model, data.x), data.edges.directed())
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_appnp_matches_pyg_with_edge_weights():
    torch.manual_seed(1)
    data = tiny_graph(num_features=4)
    weight = torch.rand(data.edges.num_edges)
    model = APPNP(4, 8, 2, K=7, alpha=0.2).eval()
    ours = model(data.x, MaskedGraph(data.edges.select(), weight))
    theirs = PygAPPNP(K=7, alpha=0.2)(_mlp(model, data.x), data.edges.directed(), weight.repeat(2))
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_zero_steps_is_the_mlp_and_alpha_one_ignores_the_graph():
    data = tiny_graph()
    graph = MaskedGraph.full(data.edges)
    model = APPNP(3, 8, 2, K=0).eval()
    assert torch.allclose(model(data.x, graph), _mlp(model, data.x))
    model.prop.alpha = 1.0
    model.prop.K = 5
    assert torch.allclose(model(data.x, graph), _mlp(model, data.x), atol=1e-6)


def test_edge_dropout_only_in_training():
    data = tiny_graph()
    graph = MaskedGraph.full(data.edges)
    model = APPNP(3, 8, 2, dropout=0.0, edge_dropout=0.5)
    model.eval()
    assert torch.equal(model(data.x, graph), model(data.x, graph))
    no_edge_dropout = APPNP(3, 8, 2, dropout=0.0)
    no_edge_dropout.load_state_dict(model.state_dict())
    assert torch.allclose(model(data.x, graph), no_edge_dropout.eval()(data.x, graph))
    model.train()
    torch.manual_seed(0)
    assert not torch.allclose(model(data.x, graph), no_edge_dropout(data.x, graph))


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="num_layers"):
        APPNP(3, 4, 2, num_layers=0)
    with pytest.raises(ValueError, match="alpha"):
        PPRPropagation(K=2, alpha=1.5)
    with pytest.raises(ValueError, match="K"):
        PPRPropagation(K=-1)


def test_prunable_weights_input_weights_and_macs():
    model = APPNP(3, 8, 2, num_layers=2, K=10)
    weights = model.prunable_weights()
    assert set(weights) == {"lins.0.weight", "lins.1.weight"}
    assert set(model.input_weight_names) <= set(weights)
    assert weights["lins.0.weight"].shape == (3, 8)
    n, kept_edges = 6, 5
    rows = model.macs(n, kept_edges, {"lins.0.weight": 10, "lins.1.weight": 7})
    assert [r["layer"] for r in rows] == ["lins.0", "lins.1"] + [f"prop.{k}" for k in range(10)]
    assert rows[0] == {"layer": "lins.0", "transform": 60, "aggregation": 0}
    assert rows[1] == {"layer": "lins.1", "transform": 42, "aggregation": 0}
    entries = gcn_operator_entries(kept_edges, n)
    assert entries == 16
    assert all(r == {"layer": r["layer"], "transform": 0, "aggregation": entries * 2} for r in rows[2:])


def test_reset_parameters_changes_weights_and_zeroes_bias():
    model = APPNP(3, 4, 2)
    before = model.lins[0].weight.clone()
    with torch.no_grad():
        model.lins[0].bias.fill_(1.0)
    model.reset_parameters()
    assert not torch.equal(before, model.lins[0].weight)
    assert torch.all(model.lins[0].bias == 0)


def test_registered_with_paper_defaults():
    spec = MODELS["appnp"]
    assert spec.options["K"] == 10 and spec.options["alpha"] == 0.1 and spec.hidden_channels == 64
    model = build_model("appnp", 5, 3)
    assert isinstance(model, APPNP) and model.prop.K == 10 and model.lins[0].weight.shape == (5, 64)
