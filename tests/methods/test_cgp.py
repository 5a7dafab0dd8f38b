import pytest
import torch

from gnnprune.copruning import CoPruner, EdgeRanking, FeatureScore, PruneTargets
from gnnprune.masks import kept_count
from gnnprune.methods import CGP, CGPConfig, Dense
from gnnprune.nn import GCN
from gnnprune.training import TrainConfig, train


def _run(data, targets, epochs=60, seed=0, hidden=32, **cgp):
    torch.manual_seed(seed)
    model = GCN(data.num_features, hidden, data.num_classes)
    pruning = not targets.is_dense
    pruner = CoPruner(model, data, learn_edge_weights=pruning, learn_feature_gates=pruning)
    method = CGP(CGPConfig(**cgp), targets) if pruning else Dense()
    result = train(model, data, pruner, method, TrainConfig(epochs=epochs, seed=seed, pseudo_label_weight=0.3,
                                                                     pseudo_label_warmup=epochs // 4, gate_lr=0.1),
                   progress=False)
    return result, pruner


def test_cgp_on_synthetic_reaches_exact_sparsities_and_learns(small_csbm):
    targets = PruneTargets(weights=0.8, edges=0.5, features=0.5)
    result, pruner = _run(small_csbm, targets, prune_start=5, prune_end=30, update_every=5)
    e = pruner.engine
    assert e.site("edges").live == kept_count(small_csbm.edges.num_edges, 0.5)
    assert e.site("features").live == kept_count(small_csbm.num_features, 0.5)
    for site in e.sites("weight"):
        assert site.live == kept_count(site.numel, 0.8)
    assert result.best_epoch >= 30
    assert result.test > 0.7  # chance is 1/3
    assert len(result.updates) == 6


def test_selection_waits_for_final_masks(small_csbm):
    with pytest.raises(ValueError, match="prune_end"):
        _run(small_csbm, PruneTargets(weights=0.5), epochs=20, prune_end=20)


def test_cora_cgp_short_run_reaches_targets_exactly(cora):
    targets = PruneTargets(weights=0.9, edges=0.5, features=0.5)
    # seeds 0-4 reach 0.734-0.791 test accuracy in this configuration (60 epochs: 0.584-0.763)
    result, pruner = _run(cora, targets, epochs=100, hidden=64, prune_start=2, prune_end=50, update_every=4)
    report = pruner.sparsity_report()
    assert report["kept_edges"] == 5278 - round(0.5 * 5278)
    assert report["kept_features"] == 1433 - round(0.5 * 1433)
    for name, entry in report["per_weight"].items():
        assert entry["live"] == entry["entries"] - round(0.9 * entry["entries"])
    # the input layer's live weights all sit in kept feature rows
    w = report["per_weight"]["convs.0.lin.weight"]
    assert w["effective_live_elements"] == w["live"]
    assert result.test > 0.70


def test_dense_cora_accuracy_floor(cora):
    result, _ = _run(cora, PruneTargets(), epochs=100, hidden=64)
    assert result.test > 0.78


def test_gate_lr_zero_freezes_the_gates_and_negative_is_refused(small_csbm):
    from gnnprune.training import make_optimizer

    torch.manual_seed(0)
    model = GCN(small_csbm.num_features, 16, small_csbm.num_classes)
    pruner = CoPruner(model, small_csbm, learn_edge_weights=True, learn_feature_gates=True)
    before = [g.detach().clone() for g in pruner.gate_parameters()]
    result = train(model, small_csbm, pruner, CGP(CGPConfig(prune_start=2, prune_end=6, update_every=2),
                                                   PruneTargets(weights=0.5, edges=0.3, features=0.3)),
                   TrainConfig(epochs=10, gate_lr=0.0), progress=False)
    assert result.best_epoch >= 6
    opt = make_optimizer(model, pruner, TrainConfig(gate_lr=0.0))
    assert opt.param_groups[-1]["lr"] == 0.0
    for b, g in zip(before, pruner.gate_parameters()):  # revived gates restart at their (unchanged) initial value
        assert torch.equal(g.detach(), b)
    with pytest.raises(ValueError, match="gate_lr"):
        TrainConfig(gate_lr=-0.1)


def test_cgp_config_rules_take_names_and_refuse_unknown_ones():
    assert CGPConfig().edge_ranking is EdgeRanking.LOCAL
    assert CGPConfig().feature_score is FeatureScore.CONTRIBUTION
    assert CGPConfig(edge_ranking="global").edge_ranking is EdgeRanking.GLOBAL
    assert CGPConfig(feature_score="magnitude").feature_score is FeatureScore.MAGNITUDE
    with pytest.raises(ValueError, match="unknown feature score 'l2'; choose from magnitude, contribution"):
        CGPConfig(feature_score="l2")
    with pytest.raises(ValueError, match="unknown edge ranking 'nodewise'; choose from global, local"):
        CGPConfig(edge_ranking="nodewise")


def test_edge_prior_is_half_lambda_squared_distance_with_gradient_lambda_times_distance(small_csbm):
    from types import SimpleNamespace

    torch.manual_seed(0)
    model = GCN(small_csbm.num_features, 8, small_csbm.num_classes)
    pruner = CoPruner(model, small_csbm, learn_edge_weights=True)
    with torch.no_grad():
        pruner.edge_logit.copy_(torch.linspace(-1.0, 4.0, pruner.edge_logit.numel()))
    run = SimpleNamespace(pruner=pruner)
    targets = PruneTargets(edges=0.3)
    distance = pruner.edge_logit.detach() - 3.0
    penalty = CGP(CGPConfig(edge_prior=0.25), targets).penalty(run)
    assert float(penalty.detach()) == pytest.approx(0.125 * float(distance.square().sum()), rel=1e-6)
    penalty.backward()
    assert torch.allclose(pruner.edge_logit.grad, 0.25 * distance)
    assert CGP(CGPConfig(), targets).penalty(run) == 0.0  # off by default
    no_logits = SimpleNamespace(pruner=CoPruner(model, small_csbm))
    assert CGP(CGPConfig(edge_prior=0.25), targets).penalty(no_logits) == 0.0
    with pytest.raises(ValueError, match="edge_prior must be >= 0, got -0.1"):
        CGPConfig(edge_prior=-0.1)


def test_edge_prior_keeps_the_learned_edge_weights_nearer_their_start(small_csbm):
    drift = {}
    for prior in (0.0, 1.0):
        _, pruner = _run(small_csbm, PruneTargets(edges=0.3), epochs=30, prune_start=5, prune_end=20,
                         update_every=5, edge_prior=prior)
        live = pruner.engine.mask("edges")
        drift[prior] = float((pruner.edge_logit.detach()[live] - pruner.edge_init_logit).abs().mean())
    assert drift[1.0] < 0.5 * drift[0.0]


def test_no_probe_at_prune_end_where_nothing_regrows(small_csbm, monkeypatch):
    probed = []
    real_probe = CoPruner.probe
    monkeypatch.setattr(CoPruner, "probe", lambda self, loss_fn: probed.append(True) or real_probe(self, loss_fn))
    result, _ = _run(small_csbm, PruneTargets(weights=0.5, edges=0.3), epochs=12, prune_start=2, prune_end=8,
                     update_every=2)
    assert [u["regrow_fraction"] > 0 for u in result.updates] == [True] * 3 + [False]
    assert [u["probe_loss"] is not None for u in result.updates] == [True] * 3 + [False]
    assert len(probed) == 3


def test_fixed_edge_weights_are_probed_at_every_update_since_their_gradient_scores_them(small_csbm):
    torch.manual_seed(0)
    model = GCN(small_csbm.num_features, 16, small_csbm.num_classes)
    pruner = CoPruner(model, small_csbm)  # no learned edge weights: live edges are scored by |grad|
    result = train(model, small_csbm, pruner, CGP(CGPConfig(prune_start=2, prune_end=8, update_every=2),
                                                   PruneTargets(edges=0.3)), TrainConfig(epochs=12), progress=False)
    assert all(u["probe_loss"] is not None for u in result.updates)
    assert pruner.engine.site("edges").live == kept_count(small_csbm.edges.num_edges, 0.3)


def test_edge_and_feature_gates_take_their_own_learning_rates(small_csbm):
    from gnnprune.training import make_optimizer

    torch.manual_seed(0)
    model = GCN(small_csbm.num_features, 16, small_csbm.num_classes)
    pruner = CoPruner(model, small_csbm, learn_edge_weights=True, learn_feature_gates=True)
    shared = make_optimizer(model, pruner, TrainConfig(gate_lr=0.1)).param_groups[-1]
    assert shared["lr"] == 0.1 and len(shared["params"]) == 2  # one group, as before
    split = make_optimizer(model, pruner, TrainConfig(gate_lr=0.1, feature_gate_lr=0.0)).param_groups[-2:]
    assert [(g["params"][0] is pruner.edge_logit, g["lr"]) for g in split] == [(True, 0.1), (False, 0.0)]
    assert TrainConfig(lr=0.02, gate_lr=None, edge_gate_lr=0.3).gate_lrs() == (0.3, 0.02)  # None: the model's rate
    assert TrainConfig(edge_gate_lr=0.3).gate_lrs() == (0.3, 0.1)
    with pytest.raises(ValueError, match="feature_gate_lr must be >= 0"):
        TrainConfig(feature_gate_lr=-1.0)
    start = pruner.feature_gate.detach().clone()
    train(model, small_csbm, pruner, CGP(CGPConfig(prune_start=2, prune_end=6, update_every=2),
                                          PruneTargets(weights=0.5, edges=0.3, features=0.3)),
          TrainConfig(epochs=10, gate_lr=0.1, feature_gate_lr=0.0), progress=False)
    assert torch.equal(pruner.feature_gate.detach(), start)  # frozen at 1 (revived gates restart at 1)
    live = pruner.engine.mask("edges")
    assert not torch.allclose(pruner.edge_logit.detach()[live], torch.full((int(live.sum()),), 3.0))
