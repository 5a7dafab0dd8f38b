import pytest
import torch
import torch.nn.functional as F

from gnnprune.copruning import EDGES, FEATURES, CoPruner, PruneTargets
from gnnprune.graph import MaskedGraph
from gnnprune.masks import kept_count
from gnnprune.nn import GCN
from helpers import tiny_graph


def _loss(data):
    return lambda logits: F.cross_entropy(logits[data.train_mask], data.y[data.train_mask])


def _setup(seed=0, **kwargs):
    torch.manual_seed(seed)
    data = tiny_graph(num_features=4)
    model = GCN(4, 5, 2, dropout=0.0)
    return data, model, CoPruner(model, data, **kwargs)


def test_probe_gradient_of_a_dead_edge_is_the_real_derivative_at_zero():
    data, model, pruner = _setup(learn_edge_weights=True)
    pruner.engine.prune(EDGES, 2, torch.tensor([0.0, 9, 9, 0, 9, 9, 9]))  # kill edges 0 and 3
    pruner.refresh()
    probe = pruner.probe(_loss(data))
    model.eval()
    x = data.x.double()

    def loss_with(weights):
        return _loss(data)(model(x, MaskedGraph(data.edges.select(), weights)))

    base = (torch.sigmoid(pruner.edge_logit) * pruner.engine.mask(EDGES)).detach().double()
    model.double()
    for e in (0, 3, 5):
        eps = 1e-6
        plus, minus = base.clone(), base.clone()
        plus[e] += eps
        minus[e] = minus[e] - eps if e == 5 else minus[e]  # dead edges: one-sided at 0
        fd = (loss_with(plus) - loss_with(minus)) / (plus[e] - minus[e])
        assert probe.edge_grad[e].item() == pytest.approx(fd.item(), rel=1e-3, abs=1e-7)
    assert probe.edge_grad[0] != 0 and probe.edge_grad[3] != 0


def test_probe_feature_score_is_gradient_norm_of_a_fresh_weight_row():
    data, model, pruner = _setup(learn_feature_gates=True)
    pruner.engine.prune(FEATURES, 1, torch.tensor([1.0, 0.0, 1.0, 1.0]))  # kill feature 1
    pruner.refresh()
    assert torch.all(model.convs[0].lin.weight[1] == 0)  # its weight row is dead too
    probe = pruner.probe(_loss(data))
    model.eval()
    h = data.x @ model.convs[0].lin.weight
    h.retain_grad()
    graph = MaskedGraph(data.edges.select())
    out = graph.gcn_operator() @ h + model.convs[0].bias
    logits = model.convs[1](F.relu(out), graph)
    _loss(data)(logits).backward()
    expected = (data.x.t() @ h.grad).norm(dim=1)  # d loss / d W[f, :] with the row free
    assert torch.allclose(probe.feature_grad, expected, atol=1e-5)
    assert probe.feature_grad[1] > 0


def test_update_hits_exact_counts_and_resets_regrown_entries():
    data, model, pruner = _setup(learn_edge_weights=True, learn_feature_gates=True)
    opt = torch.optim.Adam(list(model.parameters()) + pruner.gate_parameters(), lr=0.1)
    loss_fn = _loss(data)
    for _ in range(3):
        opt.zero_grad()
        loss_fn(model(pruner.inputs(), pruner.graph())).backward()
        pruner.mask_gradients()
        opt.step()
        pruner.apply_weight_masks()
    targets = PruneTargets(weights=0.5, edges=0.4, features=0.5)
    pruner.update(targets, 0.0, pruner.probe(loss_fn), opt)
    report = pruner.update(targets, 0.5, pruner.probe(loss_fn), opt)
    assert pruner.engine.site(EDGES).live == kept_count(7, 0.4)
    assert pruner.engine.site(FEATURES).live == kept_count(4, 0.5)
    for name, p in pruner.weights.items():
        site = pruner.engine.site("weight:" + name)
        assert site.live == kept_count(site.numel, 0.5)
        assert torch.all(p[~pruner.weight_mask(name)] == 0)
    grown_edges = report[EDGES]["grown"]
    assert grown_edges >= 1
    # regrown edges restart at the initial logit and with a fresh optimizer state
    state = opt.state[pruner.edge_logit]
    at_init = pruner.edge_logit == pruner.edge_init_logit
    assert int((at_init & pruner.engine.mask(EDGES)).sum()) >= grown_edges
    assert torch.all(state["exp_avg"][at_init & pruner.engine.mask(EDGES)] == 0)


def test_regrown_weights_start_at_zero_with_reset_optimizer_state():
    data, model, pruner = _setup()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    loss_fn = _loss(data)
    pruner.update(PruneTargets(weights=0.6), 0.0, pruner.probe(loss_fn), opt)
    for _ in range(2):
        opt.zero_grad()
        loss_fn(model(pruner.inputs(), pruner.graph())).backward()
        pruner.mask_gradients()
        opt.step()
        pruner.apply_weight_masks()
    name = "convs.1.lin.weight"
    p = pruner.weights[name]
    old_mask = pruner.weight_mask(name).clone()
    with torch.no_grad():
        opt.state[p]["exp_avg"].add_(1.0)  # make the reset observable
    pruner.update(PruneTargets(weights=0.6), 0.5, pruner.probe(loss_fn), opt)
    grown = pruner.weight_mask(name) & ~old_mask
    assert grown.any()
    assert torch.all(p[grown] == 0)
    assert torch.all(opt.state[p]["exp_avg"][grown] == 0)
    assert torch.all(opt.state[p]["exp_avg"][pruner.weight_mask(name) & old_mask] != 0)


def test_dead_weights_stay_zero_through_training_steps():
    data, model, pruner = _setup()
    loss_fn = _loss(data)
    pruner.update(PruneTargets(weights=0.7), 0.0, pruner.probe(loss_fn))
    opt = torch.optim.Adam(model.parameters(), lr=0.1, weight_decay=5e-4)
    for _ in range(5):
        opt.zero_grad()
        loss_fn(model(pruner.inputs(), pruner.graph())).backward()
        pruner.mask_gradients()
        opt.step()
        pruner.apply_weight_masks()
        for name, p in pruner.weights.items():
            assert torch.all(p[~pruner.weight_mask(name)] == 0)


def test_state_dict_restores_masks_and_gates():
    data, model, pruner = _setup(learn_edge_weights=True, learn_feature_gates=True)
    pruner.update(PruneTargets(0.5, 0.3, 0.25), 0.0, pruner.probe(_loss(data)))
    with torch.no_grad():
        pruner.edge_logit.add_(torch.randn(7))
    state = pruner.state_dict()
    _, _, other = _setup(seed=1, learn_edge_weights=True, learn_feature_gates=True)
    other.load_state_dict(state)
    assert torch.equal(other.edge_logit, pruner.edge_logit)
    for site in pruner.engine:
        assert torch.equal(other.engine.mask(site.name), site.mask)
    assert other.kept_edges() == pruner.kept_edges()


def test_prune_targets_validate():
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError):
            PruneTargets(weights=bad)
