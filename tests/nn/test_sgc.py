import pytest
import torch
from torch_geometric.nn import SGConv

from gnnprune.graph import EdgeSet, MaskedGraph
from gnnprune.macs import gcn_operator_entries
from gnnprune.nn import MODELS, build_model
from gnnprune.nn.sgc import SGC
from helpers import tiny_graph


def _pyg_copy(model: SGC) -> SGConv:
    pyg = SGConv(model.lin.weight.size(0), model.lin.weight.size(1), K=model.K)
    with torch.no_grad():
        model.lin.bias.copy_(torch.randn(model.lin.bias.shape))
        pyg.lin.weight.copy_(model.lin.weight.t())
        pyg.lin.bias.copy_(model.lin.bias)
    return pyg


@pytest.mark.parametrize("K", [0, 1, 2, 3])
def test_sgc_matches_pyg_sgconv(K):
    torch.manual_seed(K)
    data = tiny_graph(num_features=5)
    model = SGC(5, 64, 3, K=K).eval()
    pyg = _pyg_copy(model)
    ours = model(data.x, MaskedGraph.full(data.edges))
    assert torch.allclose(ours, pyg(data.x, data.edges.directed()), atol=1e-6)


def test_sgc_matches_pyg_with_edge_weights():
    torch.manual_seed(1)
    data = tiny_graph(num_features=4)
    weight = torch.rand(data.edges.num_edges)
    model = SGC(4, 64, 2, K=2).eval()
    pyg = _pyg_copy(model)
    ours = model(data.x, MaskedGraph(data.edges.select(), weight))
    assert torch.allclose(ours, pyg(data.x, data.edges.directed(), weight.repeat(2)), atol=1e-6)


def test_propagation_follows_the_current_edge_mask():
    """No propagated features are cached: a new mask changes the output exactly as a new graph would."""
    data = tiny_graph()
    model = SGC(3, 8, 2).eval()
    full = model(data.x, MaskedGraph.full(data.edges))
    keep = torch.tensor([1, 1, 1, 0, 1, 1, 1], dtype=torch.bool)  # cut the bridge 2-3
    cut = model(data.x, MaskedGraph(data.edges.select(keep)))
    assert not torch.allclose(full, cut)
    assert torch.allclose(cut, model(data.x, MaskedGraph.full(EdgeSet(data.edges.edges[:, keep], 6))), atol=1e-6)
    assert torch.allclose(full, model(data.x, MaskedGraph.full(data.edges)))


def test_dropout_on_inputs_only_in_training():
    data = tiny_graph()
    graph = MaskedGraph.full(data.edges)
    model = SGC(3, 8, 2, dropout=0.5)
    plain = SGC(3, 8, 2, dropout=0.0)
    plain.load_state_dict(model.state_dict())
    assert torch.allclose(model.eval()(data.x, graph), plain.eval()(data.x, graph))
    torch.manual_seed(0)
    assert not torch.allclose(model.train()(data.x, graph), plain(data.x, graph))


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="K"):
        SGC(3, 4, 2, K=-1)


def test_prunable_weights_input_weights_and_macs():
    model = SGC(3, 64, 2, num_layers=5, K=2)  # hidden and num_layers are unused
    weights = model.prunable_weights()
    assert set(weights) == {"lin.weight"} and weights["lin.weight"].shape == (3, 2)
    assert model.input_weight_names == ("lin.weight",)
    n, kept_edges = 6, 4
    rows = model.macs(n, kept_edges, {"lin.weight": 5})
    entries = gcn_operator_entries(kept_edges, n)
    assert rows == [{"layer": "lin", "transform": 30, "aggregation": 0},
                    {"layer": "prop.0", "transform": 0, "aggregation": entries * 2},
                    {"layer": "prop.1", "transform": 0, "aggregation": entries * 2}]


def test_reset_parameters_changes_weights_and_zeroes_bias():
    model = SGC(3, 4, 2)
    before = model.lin.weight.clone()
    with torch.no_grad():
        model.lin.bias.fill_(1.0)
    model.reset_parameters()
    assert not torch.equal(before, model.lin.weight)
    assert torch.all(model.lin.bias == 0)


def test_registered_with_paper_defaults():
    spec = MODELS["sgc"]
    assert spec.options["K"] == 2 and spec.lr == 0.2
    model = build_model("sgc", 5, 3)
    assert isinstance(model, SGC) and model.K == 2 and model.lin.weight.shape == (5, 3)
