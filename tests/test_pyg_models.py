"""Models written with torch_geometric layers, co-pruned through gnnprune.pyg.PyGModel."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Data
from torch_geometric.nn import APPNP, GATConv, GCN2Conv, GCNConv, Linear, SGConv

import gnnprune as gp
from gnnprune.copruning import EDGES, FEATURES
from gnnprune.graph import MaskedGraph
from gnnprune.nn import WeightLayout
from gnnprune.pyg import PyGModel, from_pyg
from helpers import tiny_graph


class GCN(torch.nn.Module):
    def __init__(self, f, c, hidden=16, **conv):
        super().__init__()
        self.conv1, self.conv2 = GCNConv(f, hidden, **conv), GCNConv(hidden, c, **conv)

    def forward(self, x, edge_index, edge_weight=None):
        x = F.relu(self.conv1(F.dropout(x, 0.5, self.training), edge_index, edge_weight))
        return self.conv2(F.dropout(x, 0.5, self.training), edge_index, edge_weight)


class GAT(torch.nn.Module):
    def __init__(self, f, c):
        super().__init__()
        self.conv1, self.conv2 = GATConv(f, 8, heads=2), GATConv(16, c)

    def forward(self, x, edge_index):
        return self.conv2(F.elu(self.conv1(x, edge_index)), edge_index)


class MLPThenAPPNP(torch.nn.Module):
    """A torch.nn.Linear and a lazy PyG Linear, then APPNP propagation."""

    def __init__(self, f, c):
        super().__init__()
        self.lin1, self.lin2, self.prop = torch.nn.Linear(f, 16), Linear(-1, c), APPNP(K=3, alpha=0.1)

    def forward(self, x, edge_index, edge_weight=None):
        return self.prop(self.lin2(F.relu(self.lin1(x))), edge_index, edge_weight)


class GCNII(torch.nn.Module):
    """PyG Linear ([out, in]) around GCN2Conv layers whose weight1 is [in, out]."""

    def __init__(self, f, c):
        super().__init__()
        self.lin_in, self.lin_out = Linear(f, 8), Linear(8, c)
        self.convs = torch.nn.ModuleList(GCN2Conv(8, alpha=0.1, theta=0.5, layer=i + 1) for i in range(2))

    def forward(self, x, edge_index, edge_weight=None):
        x = x0 = F.relu(self.lin_in(x))
        for conv in self.convs:
            x = F.relu(conv(x, x0, edge_index, edge_weight))
        return self.lin_out(x)


class ForgetsTheEdgeWeight(GCN):
    def forward(self, x, edge_index, edge_weight=None):
        return self.conv2(F.relu(self.conv1(x, edge_index, edge_weight)), edge_index)


class Square(torch.nn.Module):
    """Every layer takes as many inputs as the data has features: the input layer cannot be told from shapes."""

    def __init__(self, f, c):
        super().__init__()
        self.conv1, self.conv2, self.out = GCNConv(f, f), GCNConv(f, f), torch.nn.Linear(f, c)

    def forward(self, x, edge_index, edge_weight=None):
        return self.out(self.conv2(F.relu(self.conv1(x, edge_index, edge_weight)), edge_index, edge_weight))


def _wrap(module, data, targets=gp.PruneTargets(), **kwargs):
    torch.manual_seed(0)
    return PyGModel(module, data, targets, **kwargs)


# layouts and the feature axis -----------------------------------------------------------------------------------
def test_weight_layouts_come_from_the_layer_types(small_csbm):
    model = _wrap(GCNII(small_csbm.num_features, small_csbm.num_classes), small_csbm)
    assert {name: model.weight_layout(name) for name in model.prunable_weights()} == {
        "lin_in.weight": WeightLayout.OUT_IN, "convs.0.weight1": WeightLayout.IN_OUT,
        "convs.1.weight1": WeightLayout.IN_OUT, "lin_out.weight": WeightLayout.OUT_IN}
    assert model.input_weight_names == ("lin_in.weight",)
    lazy = _wrap(MLPThenAPPNP(small_csbm.num_features, small_csbm.num_classes), small_csbm)
    assert lazy.prunable_weights()["lin2.weight"].shape == (small_csbm.num_classes, 16)  # initialised by the first pass


def test_a_pruned_feature_kills_a_column_of_an_out_in_weight(tiny):
    """``torch.nn.Linear`` stores ``[out, in]``: feature f is column f, not row f."""
    model = _wrap(MLPThenAPPNP(tiny.num_features, 2), tiny)
    pruner = gp.CoPruner(model, tiny, learn_feature_gates=True)
    scores = {FEATURES: torch.tensor([3.0, 1.0, 2.0]), EDGES: torch.zeros(7)}  # feature 1 goes
    pruner.update(gp.PruneTargets(features=1 / 3), prune_scores=scores)
    weight = model.module.lin1.weight
    assert weight.shape == (16, 3)
    assert pruner.engine.mask(FEATURES).tolist() == [True, False, True]
    assert bool((weight[:, 1] == 0).all()) and bool((weight[:, [0, 2]] != 0).all())
    assert pruner.kept_weights()["lin1.weight"] == 32
    assert pruner.feature_magnitude()[1] == 0  # the dead column's weights are zero
    grad = pruner.probe(lambda logits: logits.square().sum()).feature_grad
    assert grad.shape == (3,) and grad[1] > 0  # dead column scored through its [out, in] weight column


def test_unit_pruning_of_a_pyg_model_is_refused_in_one_line(tiny):
    """A wrapped model declares no hidden-unit groups: a weight target in unit mode says so."""
    model = _wrap(MLPThenAPPNP(tiny.num_features, 2), tiny)
    pruner = gp.CoPruner(model, tiny, weight_granularity=gp.WeightGranularity.UNIT)
    with pytest.raises(ValueError, match="has no hidden units: unit pruning cannot remove weights"):
        pruner.update(gp.PruneTargets(weights=0.25), prune_scores={EDGES: torch.zeros(7)})
    pruner.update(gp.PruneTargets(features=1 / 3), prune_scores={EDGES: torch.zeros(7)})
    assert int(pruner.engine.mask("features").sum()) == tiny.num_features - round(tiny.num_features / 3)


# edges --------------------------------------------------------------------------------------------------------
def test_edges_reach_the_model_both_ways_with_their_learned_weight(tiny):
    model = _wrap(GCN(tiny.num_features, 2), tiny)
    pruner = gp.CoPruner(model, tiny, learn_edge_weights=True)
    pruner.update(gp.PruneTargets(edges=2 / 7), prune_scores={EDGES: torch.arange(7.0)},
                  edge_ranking=gp.EdgeRanking.GLOBAL)  # edges 0, 1 go
    x, edge_index, edge_weight = model.call_args(pruner.inputs(), pruner.graph())
    kept = tiny.edges.edges[:, 2:]
    assert torch.equal(edge_index, torch.cat([kept, kept.flip(0)], dim=1))
    assert torch.equal(edge_weight, pruner.edge_weight()[2:].repeat(2))
    assert x.shape == (6, tiny.num_features)


def test_dead_edges_at_weight_zero_leave_the_forward_unchanged(small_csbm):
    """The probe pass passes every edge, dead ones at 0: gcn_norm's sums and degrees are unchanged."""
    model = _wrap(GCN(small_csbm.num_features, small_csbm.num_classes), small_csbm).eval()
    keep = torch.rand(small_csbm.edges.num_edges, generator=torch.Generator().manual_seed(0)) < 0.6
    weight = torch.rand(small_csbm.edges.num_edges, generator=torch.Generator().manual_seed(1)) + 0.1
    x = small_csbm.x
    kept = model(x, MaskedGraph(small_csbm.edges.select(keep), weight[keep]))
    probe = model(x, MaskedGraph(small_csbm.edges.select(), weight * keep))
    assert torch.allclose(kept, probe, atol=1e-5)


def test_a_layer_that_ignores_edge_weight_refuses_edge_pruning_in_one_line(small_csbm):
    with pytest.raises(ValueError) as error:
        _wrap(GAT(small_csbm.num_features, small_csbm.num_classes), small_csbm, gp.PruneTargets(0.5, 0.2, 0.3))
    assert str(error.value) == "conv1 (GATConv) ignores edge_weight; set edges=0 (features and weights still prune)"


def test_a_layer_called_without_the_edge_weight_is_named(small_csbm):
    with pytest.raises(ValueError, match=r"^conv2 \(GCNConv\) is called without the model's edge_weight; set edges=0"):
        _wrap(ForgetsTheEdgeWeight(small_csbm.num_features, small_csbm.num_classes), small_csbm, gp.PruneTargets(edges=0.2))


def test_a_cached_normalisation_is_refused(small_csbm):
    with pytest.raises(ValueError, match=r"conv1 \(GCNConv\) caches its normalised graph \(cached=True\)"):
        _wrap(GCN(small_csbm.num_features, small_csbm.num_classes, cached=True), small_csbm, gp.PruneTargets(weights=0.5))
    _wrap(GCN(small_csbm.num_features, small_csbm.num_classes, cached=True), small_csbm)  # a dense run may cache


def test_gat_prunes_features_and_weights_to_exact_counts_with_edges_at_zero(small_csbm):
    torch.manual_seed(0)
    result = gp.prune(GAT(small_csbm.num_features, small_csbm.num_classes), small_csbm, (0.5, 0.0, 0.3), epochs=12,
                      progress=False)
    sparsity = result.sparsity
    assert result.pruner.edge_logit is None  # nothing would learn them
    assert (sparsity["kept_edges"], sparsity["kept_features"]) == (small_csbm.edges.num_edges, 28)
    assert {name: (w["live"], w["entries"]) for name, w in sparsity["per_weight"].items()} == {
        "conv1.lin.weight": (320, 640), "conv2.lin.weight": (24, 48)}
    assert result.model is not None and result.metrics["model"] == "GAT"


# the input layer ----------------------------------------------------------------------------------------------
def test_an_ambiguous_input_layer_is_refused_naming_the_argument(small_csbm):
    f = small_csbm.num_features
    with pytest.raises(ValueError) as error:
        _wrap(Square(f, small_csbm.num_classes), small_csbm, gp.PruneTargets(features=0.3))
    message = str(error.value)
    assert "\n" not in message
    assert "3 weights take 40 inputs (conv1.lin.weight, conv2.lin.weight, out.weight)" in message
    assert "input_layer='conv1.lin'" in message
    model = _wrap(Square(f, small_csbm.num_classes), small_csbm, gp.PruneTargets(features=0.3), input_layer="conv1.lin")
    assert model.input_weight_names == ("conv1.lin.weight",)
    assert _wrap(Square(f, small_csbm.num_classes), small_csbm).input_weight_names == ()  # features kept: no need
    with pytest.raises(ValueError, match="input_layer 'conv9' names no prunable weight of Square; choose from conv1.lin"):
        _wrap(Square(f, small_csbm.num_classes), small_csbm, input_layer="conv9")


def test_an_input_layer_of_another_width_is_refused(small_csbm):
    with pytest.raises(ValueError, match="input_layer 'conv2.lin' takes 16 inputs, but the data has 40 features"):
        _wrap(GCN(small_csbm.num_features, small_csbm.num_classes), small_csbm, input_layer="conv2.lin")


# data ---------------------------------------------------------------------------------------------------------
def _pyg_tiny(**changes):
    tiny = tiny_graph()
    edges = tiny.edges.directed()
    data = Data(x=tiny.x, edge_index=edges, y=tiny.y, train_mask=tiny.train_mask, val_mask=tiny.val_mask,
                test_mask=tiny.test_mask)
    for key, value in changes.items():
        setattr(data, key, value)
    return data


def test_from_pyg_keeps_the_graph():
    data = from_pyg(_pyg_tiny())
    tiny = tiny_graph()
    assert torch.equal(data.edges.edges, tiny.edges.edges) and torch.equal(data.x, tiny.x)
    assert (data.num_classes, data.split_sizes()) == (2, {"train": 2, "val": 2, "test": 2})


@pytest.mark.parametrize("changes, message", [
    ({"edge_index": torch.tensor([[0, 1], [1, 2]])}, "data.edge_index is directed"),
    ({"edge_index": torch.tensor([[0, 1, 2], [1, 0, 2]])}, "data.edge_index has self-loops"),
    ({"edge_attr": torch.ones(14, 2)}, "data.edge_attr is not used"),
    ({"train_mask": torch.ones(6, 3, dtype=torch.bool)}, "data.train_mask holds 3 splits; pick one"),
    ({"y": None}, "data.y is missing"),
])
def test_from_pyg_refuses_what_it_cannot_prune(changes, message):
    with pytest.raises(ValueError, match=message):
        from_pyg(_pyg_tiny(**changes))


# end to end ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_class", [GCN, MLPThenAPPNP, GCNII])
def test_cgp_prunes_a_pyg_model_to_exact_counts(small_csbm, model_class):
    torch.manual_seed(0)
    result = gp.prune(model_class(small_csbm.num_features, small_csbm.num_classes), small_csbm, (0.5, 0.3, 0.3),
                      epochs=40, progress=False)
    sparsity = result.sparsity
    assert (sparsity["kept_edges"], sparsity["kept_features"]) == (1245, 28)
    for weight in sparsity["per_weight"].values():
        assert weight["live"] == weight["entries"] - round(0.5 * weight["entries"])
    state = result.model.state_dict()
    for name, live in result.pruner.kept_weights().items():
        assert int((state[name] != 0).sum()) <= live
    assert result.metrics["macs"]["ratio"] < 0.6
    assert result.test >= 0.72  # measured 0.7467-0.8767 over these models and seeds 0-2


def test_every_method_runs_on_a_pyg_model(small_csbm):
    for method in gp.PruneMethod:
        torch.manual_seed(0)
        targets = (0, 0, 0) if method is gp.PruneMethod.DENSE else (0.5, 0.2, 0.3)
        result = gp.prune(GCN(small_csbm.num_features, small_csbm.num_classes), small_csbm, targets, method,
                          epochs=10, progress=False)
        assert result.metrics["method"] == method.value
        assert result.sparsity["kept_features"] == (40 if method is gp.PruneMethod.DENSE else 28)


def test_own_loop_with_the_hooks_equals_the_built_in_loop(small_csbm):
    """Same seed, Adam, loss and selection rule: the loop of :func:`gnnprune.prune` and a loop of
    your own through :func:`gnnprune.attach` give the same masks, weights and test accuracy."""
    config = gp.ExperimentConfig.for_model(None, targets=gp.PruneTargets(0.8, 0.3, 0.3), epochs=20)
    config = config.overridden(train={"pseudo_label_weight": 0.0})
    data = small_csbm
    torch.manual_seed(0)
    built_in = gp.prune(GCN(data.num_features, data.num_classes), data, config=config, progress=False)

    torch.manual_seed(0)
    model = GCN(data.num_features, data.num_classes)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    loss_fn = lambda out: F.cross_entropy(out[data.train_mask], data.y[data.train_mask])  # noqa: E731
    run = gp.attach(model, data, optimizer, loss_fn=loss_fn, config=config)
    best = None
    for epoch in range(20):
        run.before_step(epoch)
        model.train()
        optimizer.zero_grad()
        run.step(loss_fn(model(*run.inputs())))
        model.eval()
        with torch.no_grad():
            pred = model(*run.inputs()).argmax(-1)
        val, test = ((pred[m] == data.y[m]).float().mean().item() for m in (data.val_mask, data.test_mask))
        if run.method.selectable(epoch) and (best is None or val > best[0]):
            best = (val, test, epoch, {k: v.clone() for k, v in model.state_dict().items()})
    assert (best[2], best[1]) == (built_in.metrics["best_epoch"], built_in.test)
    assert all(torch.equal(best[3][k], v) for k, v in built_in.model.state_dict().items())
    assert run.pruner.engine.mask(EDGES).sum() == 1245


def test_attach_adds_the_gates_to_your_optimizer(small_csbm):
    model = GCN(small_csbm.num_features, small_csbm.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    run = gp.attach(model, small_csbm, optimizer, (0.5, 0.2, 0.3), epochs=20)
    group = optimizer.param_groups[-1]
    assert (len(optimizer.param_groups), group["lr"], group["weight_decay"]) == (2, 0.1, 0.0)
    assert group["params"][0] is run.pruner.edge_logit and group["params"][1] is run.pruner.feature_gate
    with pytest.raises(ValueError, match="ugs trains many rounds"):
        gp.attach(GCN(40, 3), small_csbm, torch.optim.Adam(model.parameters()), (0.5, 0.2, 0.3), "ugs", epochs=20)
    with pytest.raises(ValueError, match="jackpot searches masks in a trained model's frozen weights"):
        gp.attach(GCN(40, 3), small_csbm, torch.optim.Adam(model.parameters()), (0.5, 0.2, 0.3), "jackpot",
                  epochs=20)
    with pytest.raises(ValueError, match=r"prune_end \(15\) must be < epochs \(10\)"):
        gp.attach(GCN(40, 3), small_csbm, torch.optim.Adam(model.parameters()), (0.5, 0.2, 0.3),
                  config=dataclasses.replace(gp.ExperimentConfig.for_model(None, targets=gp.PruneTargets(0.5),
                                                                           epochs=20),
                                             train=gp.TrainConfig(epochs=10)))


def test_own_loop_with_the_built_in_objective_equals_prune_with_its_defaults(small_csbm):
    """CGP's default objective (self-training term) in a loop of your own: ``run.train_loss`` and
    ``run.set_pseudo_labels`` after each evaluation, as the built-in loop does."""
    data = small_csbm
    config = gp.ExperimentConfig.for_model(None, targets=gp.PruneTargets(0.8, 0.3, 0.3), epochs=20)
    torch.manual_seed(0)
    built_in = gp.prune(GCN(data.num_features, data.num_classes), data, config=config, progress=False)
    assert built_in.config.train.pseudo_label_weight == 0.3  # CGP's own
    torch.manual_seed(0)
    model = GCN(data.num_features, data.num_classes)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    run = gp.attach(model, data, optimizer, config=config)
    assert run.config.pseudo_label_weight == 0.3
    last = None
    for epoch in range(20):
        run.before_step(epoch)
        model.train()
        optimizer.zero_grad()
        run.step(run.train_loss(model(*run.inputs())))
        model.eval()
        with torch.no_grad():
            logits = model(*run.inputs())
        run.set_pseudo_labels(logits)
        if epoch == built_in.metrics["best_epoch"]:
            last = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(torch.equal(last[k], v) for k, v in built_in.model.state_dict().items())
