"""The contract every registered model keeps, checked for all of them.

Masks are computation: a masked edge is a deleted edge, a zero-weight edge is an absent one,
full masks give the model's plain output, sparse inputs give the dense ones, node order does
not matter, gradients reach the learned edge weights and every prunable weight, and a short
co-pruning run reaches its exact sparsities and learns. Model-specific equations (PyG
equivalence, attention formulas, schedules) are tested in each model's own file.
"""
import pytest
import torch

from gnnprune.copruning import CoPruner, PruneTargets
from gnnprune.features import NodeFeatures
from gnnprune.graph import EdgeSet, MaskedGraph
from gnnprune.masks import kept_count
from gnnprune.methods import CGP, CGPConfig
from gnnprune.nn import MODELS, build_model
from gnnprune.training import TrainConfig, train
from helpers import tiny_graph

NAMES = sorted(MODELS)
#: small shapes: (hidden, layers); deep models keep enough depth to exercise their residuals
SHAPES = {"gcn2": (8, 4), "resgcn": (8, 3), "sgc": (8, 2), "gat": (4, 2)}
KEEP = torch.tensor([1, 1, 0, 1, 0, 1, 1], dtype=torch.bool)


def _model(name: str, in_channels: int = 3, out_channels: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    hidden, layers = SHAPES.get(name, (8, 2))
    model = build_model(name, in_channels, out_channels, hidden, layers, 0.5)
    with torch.no_grad():  # non-trivial biases, so that no term hides behind a zero
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _weights(seed: int, n: int = 7) -> torch.Tensor:
    return 0.2 + torch.rand(n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", NAMES)
def test_masking_an_edge_equals_deleting_it(name):
    data = tiny_graph()
    model = _model(name)
    weight = _weights(1)
    masked = model(data.x, MaskedGraph(data.edges.select(KEEP), weight[KEEP]))
    deleted = model(data.x, MaskedGraph(EdgeSet(data.edges.edges[:, KEEP], 6).select(), weight[KEEP]))
    assert torch.allclose(masked, deleted, atol=1e-6)
    assert not torch.allclose(masked, model(data.x, MaskedGraph(data.edges.select(), weight)), atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_a_zero_weight_edge_equals_an_absent_edge(name):
    data = tiny_graph()
    model = _model(name)
    weight = _weights(2)
    weight[~KEEP] = 0.0
    zero = model(data.x, MaskedGraph(data.edges.select(), weight))
    absent = model(data.x, MaskedGraph(data.edges.select(KEEP), weight[KEEP]))
    assert torch.allclose(zero, absent, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_a_node_permutation_permutes_the_output(name):
    data = tiny_graph()
    model = _model(name)
    weight = _weights(3)[KEEP]
    out = model(data.x, MaskedGraph(data.edges.select(KEEP), weight))
    perm = torch.tensor([3, 5, 0, 1, 4, 2])  # new node i is old node perm[i]
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(6)
    edges = inverse[data.edges.edges[:, KEEP]]
    # EdgeSet stores u < v and sorts; carry each edge's weight along
    order = torch.argsort(edges.min(0).values * 6 + edges.max(0).values)
    permuted = EdgeSet(torch.stack([edges.min(0).values, edges.max(0).values])[:, order], 6)
    assert torch.equal(permuted.edges, torch.stack([edges.min(0).values, edges.max(0).values])[:, order])
    out_p = model(data.x[perm], MaskedGraph(permuted.select(), weight[order]))
    assert torch.allclose(out_p, out[perm], atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_full_masks_give_the_plain_model_and_sparse_inputs_the_dense_ones(name):
    data = tiny_graph(num_features=8)
    data.x = data.x * (torch.rand(6, 8, generator=torch.Generator().manual_seed(1)) < 0.3)
    model = _model(name, in_channels=8)
    plain = model(data.x, MaskedGraph.full(data.edges))
    pruner = CoPruner(model, data)
    assert torch.allclose(model(pruner.inputs(), pruner.graph()), plain, atol=1e-6)
    sparse = NodeFeatures(data.x, sparse=True).select().gated()
    assert torch.allclose(model(sparse, MaskedGraph.full(data.edges)), plain, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_edge_weights_and_every_prunable_weight(name):
    data = tiny_graph()
    model = _model(name)  # eval: no dropout hides an edge
    weight = _weights(4).requires_grad_()  # not uniform: a weighted mean ignores a common scale
    model(data.x, MaskedGraph(data.edges.select(), weight)).pow(2).sum().backward()
    assert torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0
    for param_name, p in model.prunable_weights().items():
        assert p.grad is not None and p.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("name", NAMES)
def test_reset_parameters_redraws_every_prunable_weight(name):
    model = _model(name)
    before = {k: p.detach().clone() for k, p in model.prunable_weights().items()}
    model.reset_parameters()
    for k, p in model.prunable_weights().items():
        assert not torch.equal(before[k], p), k


@pytest.mark.parametrize("name", NAMES)
def test_macs_shrink_with_kept_edges_and_weights(name):
    model = _model(name)
    weights = model.prunable_weights()
    dense = model.macs(6, 7, {k: p.numel() for k, p in weights.items()})
    fewer_edges = model.macs(6, 3, {k: p.numel() for k, p in weights.items()})
    fewer_weights = model.macs(6, 7, {k: p.numel() // 2 for k, p in weights.items()})
    total = lambda rows: sum(r["transform"] + r["aggregation"] for r in rows)  # noqa: E731
    assert total(fewer_edges) < total(dense) and total(fewer_weights) < total(dense)


# per model: (epochs, hidden, layers, train overrides); tuned so that 60 epochs or fewer learn
CGP_RUNS = {
    "gcn": (50, 32, 2, {}),
    "gat": (50, 8, 2, {}),
    "sage": (50, 32, 2, {}),
    "appnp": (60, 32, 2, {}),
    "sgc": (60, 32, 1, {"lr": 0.2, "weight_decay": 5e-5}),
    "gcn2": (40, 32, 3, {"lr": 0.02}),
    "resgcn": (40, 32, 3, {"lr": 0.02}),
}


@pytest.mark.parametrize("name", NAMES)
def test_a_short_cgp_run_reaches_exact_sparsities_and_learns(name, small_csbm):
    assert set(CGP_RUNS) == set(MODELS), "add the new model to CGP_RUNS"
    epochs, hidden, layers, overrides = CGP_RUNS[name]
    data = small_csbm
    torch.manual_seed(0)
    model = build_model(name, data.num_features, data.num_classes, hidden, layers, 0.2)
    pruner = CoPruner(model, data, learn_edge_weights=True, learn_feature_gates=True)
    targets = PruneTargets(weights=0.8, edges=0.3, features=0.3)
    end = epochs // 2
    method = CGP(CGPConfig(prune_start=4, prune_end=end, update_every=5), targets)
    config = TrainConfig(**{"epochs": epochs, "lr": 0.01, "seed": 0, "pseudo_label_weight": 0.3,
                            "pseudo_label_warmup": epochs // 4, "gate_lr": 0.1, **overrides})
    result = train(model, data, pruner, method, config, progress=False)
    e = pruner.engine
    assert e.site("edges").live == kept_count(data.edges.num_edges, 0.3) == pruner.kept_edges()
    assert e.site("features").live == kept_count(data.num_features, 0.3)
    for site in e.sites("weight"):
        assert site.live == kept_count(site.numel, 0.8), site.name
    for weight_name, param in pruner.weights.items():
        assert bool((param[~pruner.weight_mask(weight_name)] == 0).all()), weight_name
    assert result.best_epoch >= end
    assert result.test > 0.6, f"{name}: {result.test}"  # chance is 1/3
