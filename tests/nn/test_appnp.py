import pytest
import torch
from torch_geometric.nn import APPNP as PygAPPNP

from gnnprune.copruning import CoPruner, PruneTargets
from gnnprune.features import NodeFeatures
from gnnprune.graph import EdgeSet, MaskedGraph
from gnnprune.macs import gcn_operator_entries
from gnnprune.masks import kept_count
from gnnprune.methods import CGP, CGPConfig
from gnnprune.nn import MODELS, build_model
from gnnprune.nn.appnp import APPNP, PPRPropagation
from gnnprune.training import TrainConfig, train
from tests.conftest import tiny_graph


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


def test_sparse_and_dense_features_give_the_same_output():
    data = tiny_graph(num_features=8)
    x = data.x * (torch.rand(6, 8, generator=torch.Generator().manual_seed(0)) < 0.3)
    model = APPNP(8, 16, 2).eval()
    graph = MaskedGraph.full(data.edges)
    sparse = NodeFeatures(x, sparse=True).select().gated()
    assert torch.allclose(model(sparse, graph), model(x, graph), atol=1e-6)


def test_masking_edges_equals_deleting_them():
    data = tiny_graph()
    keep = torch.tensor([1, 1, 0, 1, 0, 1, 1], dtype=torch.bool)
    weight = torch.rand(data.edges.num_edges, generator=torch.Generator().manual_seed(2))
    model = APPNP(3, 8, 2, num_layers=3).eval()
    masked = model(data.x, MaskedGraph(data.edges.select(keep), weight[keep]))
    deleted = model(data.x, MaskedGraph(EdgeSet(data.edges.edges[:, keep], 6).select(), weight[keep]))
    assert torch.allclose(masked, deleted, atol=1e-6)


def test_zero_edge_weight_equals_absent_edge():
    data = tiny_graph()
    weight = torch.rand(data.edges.num_edges, generator=torch.Generator().manual_seed(3))
    weight[[2, 4]] = 0.0
    keep = weight != 0
    model = APPNP(3, 8, 2).eval()
    zero = model(data.x, MaskedGraph(data.edges.select(), weight))
    absent = model(data.x, MaskedGraph(data.edges.select(keep), weight[keep]))
    assert torch.allclose(zero, absent, atol=1e-6)


def test_node_permutation_permutes_the_output():
    data = tiny_graph()
    keep = torch.tensor([1, 0, 1, 1, 1, 0, 1], dtype=torch.bool)
    model = APPNP(3, 8, 2).eval()
    out = model(data.x, MaskedGraph(data.edges.select(keep)))
    perm = torch.tensor([3, 5, 0, 1, 4, 2])  # new node i is old node perm[i]
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(6)
    permuted_edges = EdgeSet.from_edge_index(inverse[data.edges.edges[:, keep]], 6)
    out_p = model(data.x[perm], MaskedGraph.full(permuted_edges))
    assert torch.allclose(out_p, out[perm], atol=1e-6)


def test_gradients_reach_edge_weights_and_every_parameter():
    data = tiny_graph()
    weight = torch.full((data.edges.num_edges,), 0.7, requires_grad=True)
    model = APPNP(3, 8, 2, edge_dropout=0.3).train()
    model(data.x, MaskedGraph(data.edges.select(), weight)).pow(2).sum().backward()
    assert weight.grad is not None and torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


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


def test_cgp_on_synthetic_reaches_exact_sparsities_and_learns(small_csbm):
    torch.manual_seed(0)
    data = small_csbm
    model = APPNP(data.num_features, 32, data.num_classes, K=10, alpha=0.1)
    pruner = CoPruner(model, data, learn_edge_weights=True, learn_feature_gates=True)
    targets = PruneTargets(weights=0.8, edges=0.5, features=0.5)
    method = CGP(CGPConfig(prune_start=5, prune_end=30, update_every=5), targets)
    result = train(model, data, pruner, method,
                   TrainConfig(epochs=60, lr=0.01, weight_decay=5e-4, seed=0, pseudo_label_weight=0.3,
                               pseudo_label_warmup=15, gate_lr=0.1), progress=False)
    e = pruner.engine
    assert e.site("edges").live == kept_count(data.edges.num_edges, 0.5)
    assert e.site("features").live == kept_count(data.num_features, 0.5)
    for site in e.sites("weight"):
        assert site.live == kept_count(site.numel, 0.8)
    assert pruner.kept_edges() == kept_count(data.edges.num_edges, 0.5)
    assert result.best_epoch >= 30
    assert result.test > 0.7  # chance is 1/3
