"""Baselines on the shared engine: exact targets, rewinding, schedules, CLI."""
import copy
import dataclasses
import json

import pytest
import torch

from gnnprune.cli import main
from gnnprune.config import ExperimentConfig, ModelConfig
from gnnprune.copruning import EDGES, FEATURES, CoPruner, PruneTargets, WeightGranularity
from gnnprune.experiment import fit_method
from gnnprune.masks import kept_count
from gnnprune.methods import CGPConfig, UGSConfig, fit_ugs
from gnnprune.methods import ugs as ugs_module
from gnnprune.nn import GCN
from gnnprune.training import TrainConfig
from helpers import tiny_graph

TARGETS = PruneTargets(weights=0.7, edges=0.4, features=0.5)
TRAIN = TrainConfig(epochs=12, lr=0.01, seed=0)
CGP_SCHEDULE = CGPConfig(prune_start=1, prune_end=8, update_every=2)


def _config(method, **changes):
    settings = {"targets": TARGETS, "cgp": CGP_SCHEDULE, "ugs": UGSConfig(round_epochs=4), **changes}
    return ExperimentConfig(dataset="tiny", model=ModelConfig("gcn", 8, 2, 0.0), train=TRAIN, method=method,
                            **settings)


def _fit(method, data, seed=0, **changes):
    torch.manual_seed(seed)
    model = GCN(data.num_features, 8, data.num_classes, dropout=0.0)
    return model, fit_method(_config(method, **changes), model, data, dataclasses.replace(TRAIN, seed=seed),
                             progress=False)


def _assert_exact(pruner: CoPruner, targets: PruneTargets):
    e = pruner.engine
    assert e.site(EDGES).live == kept_count(e.site(EDGES).numel, targets.edges)
    assert e.site(FEATURES).live == kept_count(e.site(FEATURES).numel, targets.features)
    for site in e.sites("weight"):
        assert site.live == kept_count(site.numel, targets.weights), site.name


@pytest.mark.parametrize("method", ["random", "oneshot", "ugs", "cgp"])
def test_every_baseline_reaches_its_exact_targets(method):
    data = tiny_graph(num_features=10)
    model, fitted = _fit(method, data)
    _assert_exact(fitted.pruner, TARGETS)
    for name, param in fitted.pruner.weights.items():  # dead weights are exactly zero
        assert bool((param[~fitted.pruner.weight_mask(name)] == 0).all())


def test_dense_changes_no_mask_and_rejects_targets():
    _, fitted = _fit("dense", tiny_graph(), **{"targets": PruneTargets()})
    assert fitted.pruner.engine.sparsity() == 0.0
    with pytest.raises(ValueError, match="dense takes no sparsity"):
        _config("dense")


def test_random_masks_follow_the_seed_and_stay_fixed():
    data = tiny_graph(num_features=10)
    masks = []
    for seed in (0, 0, 1):
        _, fitted = _fit("random", data, seed=seed)
        masks.append(torch.cat([site.mask.view(-1) for site in fitted.pruner.engine]))
        assert len(fitted.result.updates) == 1  # drawn once, never changed
    assert torch.equal(masks[0], masks[1])
    assert not torch.equal(masks[0], masks[2])


def test_oneshot_cuts_once_after_the_dense_phase_and_counts_both_phases():
    _, fitted = _fit("oneshot", tiny_graph(num_features=10))
    result = fitted.result
    assert [u["epoch"] for u in result.updates] == [TRAIN.epochs]
    assert result.epochs_run == 2 * TRAIN.epochs
    assert result.best_epoch >= TRAIN.epochs


def test_update_with_given_scores_prunes_the_lowest_exactly():
    data = tiny_graph(num_features=4)
    model = GCN(4, 4, 2)
    pruner = CoPruner(model, data)
    scores = {EDGES: torch.tensor([5.0, 1.0, 7.0, 0.0, 3.0, 6.0, 2.0]), FEATURES: torch.tensor([1.0, 0.0, 3.0, 2.0])}
    pruner.update(PruneTargets(edges=3 / 7, features=0.5), prune_scores=scores)
    assert pruner.engine.mask(EDGES).tolist() == [True, False, True, False, True, True, False]
    assert pruner.engine.mask(FEATURES).tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match="probe"):
        pruner.update(PruneTargets(), regrow_fraction=0.1)


def test_ugs_schedule_prunes_a_fraction_of_the_remainder_capped_at_the_target():
    steps = UGSConfig().schedule(PruneTargets(weights=0.5, edges=0.2, features=0.0))
    assert len(steps) == 5  # edges: 1 - 0.95**4 = 0.185 < 0.2 <= 1 - 0.95**5
    assert steps[0].weights == pytest.approx(0.2) and steps[0].edges == pytest.approx(0.05)
    assert steps[2].weights == pytest.approx(1 - 0.8 ** 3)
    assert steps[3].weights == 0.5  # capped
    assert steps[-1] == PruneTargets(weights=0.5, edges=0.2, features=0.0)
    assert all(b.edges >= a.edges and b.weights >= a.weights for a, b in zip(steps, steps[1:]))
    assert UGSConfig().schedule(PruneTargets()) == []


def test_ugs_rewinds_live_weights_to_their_initial_values_every_round(monkeypatch):
    data = tiny_graph(num_features=10)
    torch.manual_seed(0)
    model = GCN(data.num_features, 8, data.num_classes, dropout=0.0)
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    starts = []
    real_train = ugs_module.train

    def spy(model, data, pruner, method, config, progress=True, **loop):
        starts.append(({n: p.detach().clone() for n, p in pruner.weights.items()},
                       {n: pruner.weight_mask(n).clone() for n in pruner.weights}))
        return real_train(model, data, pruner, method, config, progress=progress, **loop)

    monkeypatch.setattr(ugs_module, "train", spy)
    targets = PruneTargets(weights=0.5, edges=0.2, features=0.3)
    fitted = fit_ugs(model, data, targets, UGSConfig(round_epochs=3), TRAIN, progress=False)
    assert len(starts) == len(UGSConfig().schedule(targets)) + 1  # every round, then the ticket
    for weights, masks in starts:
        for name, value in weights.items():
            name = name.replace("parametrizations.weight.original", "weight")
            expected = initial[name.replace(".parametrizations.weight.original", ".weight")] * masks[name]
            assert torch.equal(value, expected), name
    assert fitted.result.epochs_run == 3 * len(starts)
    assert len(fitted.result.updates) == len(starts) - 1
    _assert_exact(fitted.pruner, targets)
    assert fitted.pruner.edge_logit is None  # the ticket trains binary masks
    assert not any("parametrizations" in name for name, _ in model.named_parameters())


@pytest.mark.parametrize("method", ["ugs", "colt"])
def test_rounds_with_global_ranking_reach_the_exact_total_and_follow_the_scores(method):
    """Under one global ranking the weights' total is exact and the tensors end at sparsities of
    their own (the ranking itself: tests/masks/test_distribution.py)."""
    from gnnprune.masks import WeightDistribution

    data = tiny_graph(num_features=10)
    torch.manual_seed(0)
    model = GCN(data.num_features, 8, data.num_classes, dropout=0.0)
    config = _config(method, weight_distribution=WeightDistribution.GLOBAL)
    fitted = fit_method(config, model, data, TRAIN, progress=False)
    sites = {site.name: site for site in fitted.pruner.engine.sites("weight")}
    total = sum(site.numel for site in sites.values())
    assert sum(site.live for site in sites.values()) == kept_count(total, TARGETS.weights)
    assert len({round(site.live / site.numel, 6) for site in sites.values()}) > 1
    assert fitted.pruner.engine.site(EDGES).live == kept_count(data.edges.num_edges, TARGETS.edges)


def test_soft_mask_noise_is_relative_seeded_and_optional():
    masks = [torch.full((50,), 0.5), None, torch.ones(4, 5)]
    ugs_module.perturb_soft_masks(masks, 1e-3, seed=7)
    again = [torch.full((50,), 0.5), torch.ones(4, 5)]
    ugs_module.perturb_soft_masks(again, 1e-3, seed=7)
    assert torch.equal(masks[0], again[0]) and torch.equal(masks[2], again[1])
    assert ((masks[0] - 0.5).abs() <= 0.5e-3).all() and masks[0].unique().numel() == 50
    unchanged = torch.ones(3)
    ugs_module.perturb_soft_masks([unchanged], 0.0, seed=7)
    assert torch.equal(unchanged, torch.ones(3))
    with pytest.raises(ValueError, match="mask_noise"):
        UGSConfig(mask_noise=1.0)


def _input_rows_pruned_in_one_round(mask_noise: float) -> torch.Tensor:
    """One UGS round at 20% of the weights where input features 0-29 are all zero: their weight
    rows get no loss gradient, so only the L1 penalty moves their soft masks."""
    data = tiny_graph(num_features=40)
    data.x[:, :30] = 0
    torch.manual_seed(0)
    model = GCN(40, 8, data.num_classes, dropout=0.0)
    config = UGSConfig(round_epochs=3, mask_noise=mask_noise)
    fitted = fit_ugs(model, data, PruneTargets(weights=0.2), config, TRAIN, progress=False)
    mask = fitted.pruner.engine.mask("weight:convs.0.lin.weight")  # [in, out]: a row per input feature
    return ~mask[:30].reshape(-1)


def test_ugs_breaks_the_ties_of_untouched_soft_masks_at_random():
    exact = _input_rows_pruned_in_one_round(mask_noise=0.0)
    pruned = int(exact.sum())
    assert pruned > 0
    assert torch.equal(exact, torch.arange(30 * 8) < pruned)  # tied masks: pruned in index order, rows 0, 1, ...
    noisy = _input_rows_pruned_in_one_round(mask_noise=1e-5)
    assert noisy.sum() > 0 and not torch.equal(noisy, torch.arange(30 * 8) < int(noisy.sum()))
    assert noisy[120:].sum() > 0  # the second half of the untouched rows loses entries too


def test_ugs_penalty_shrinks_the_soft_masks(small_csbm):
    torch.manual_seed(0)
    model = GCN(small_csbm.num_features, 16, small_csbm.num_classes)
    pruner = CoPruner(model, small_csbm, learn_edge_weights=True, learn_feature_gates=True,
                      edge_init_logit=1.0, edge_activation=torch.abs)
    masks = ugs_module.attach_weight_masks(model, list(pruner.weights))
    method = ugs_module.UGSRound(UGSConfig(edge_l1=1e-2, weight_l1=1e-2, feature_l1=1e-2), masks)
    from gnnprune.training import train
    train(model, small_csbm, pruner, method, TrainConfig(epochs=30, seed=0, gate_lr=0.01, pseudo_label_weight=0.0),
          progress=False)
    assert float(pruner.edge_weight().detach().mean()) < 0.9
    assert all(float(m.detach().abs().mean()) < 0.9 for m in masks.values())


def test_ugs_refuses_structured_weights():
    with pytest.raises(ValueError, match="ugs prunes single weights"):
        _config("ugs", weight_granularity=WeightGranularity.UNIT)


@pytest.mark.parametrize("method", ["random", "oneshot", "ugs"])
def test_cli_runs_each_baseline_on_synthetic(tmp_path, method):
    out = tmp_path / method
    code = main(["prune", "--dataset", "synthetic:num_nodes=300,num_features=20,num_val=60,num_test=120",
                 "--method", method, "--weight-sparsity", "0.5", "--edge-sparsity", "0.2", "--feature-sparsity", "0.2",
                 "--epochs", "8", "--hidden", "16", "--out", str(out), "--no-progress"])
    assert code == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["config"]["method"] == method
    run = record["runs"][0]
    assert run["sparsity"]["edges"] == pytest.approx(0.2, abs=1e-3)
    assert run["sparsity"]["weights"] == pytest.approx(0.5, abs=1e-3)
    expected_epochs = {"random": 8, "oneshot": 16, "ugs": 8 * (5 + 1)}[method]  # ugs: 5 rounds (edges) + the ticket
    assert run["epochs"] == expected_epochs


def test_cli_rejects_dense_with_targets(tmp_path):
    out = tmp_path / "x"
    assert main(["prune", "--dataset", "synthetic", "--method", "dense", "--weight-sparsity", "0.5",
                 "--out", str(out)]) == 2
    assert not out.exists()


def test_ugs_levels_share_one_trajectory_and_match_single_runs():
    data = tiny_graph(num_features=10)
    levels = [PruneTargets(weights=0.3, edges=0.1, features=0.2), PruneTargets(weights=0.6, edges=0.3, features=0.4)]
    config = UGSConfig(round_epochs=3)
    torch.manual_seed(0)
    model = GCN(data.num_features, 8, data.num_classes, dropout=0.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    shared = ugs_module.fit_ugs_levels(model, data, levels, config, TRAIN, progress=False)
    rounds = [len(s) for s in config.level_schedules(levels)]
    assert [len(f.result.updates) for f in shared] == [rounds[0], rounds[0] + rounds[1]]
    assert [f.result.epochs_run for f in shared] == [3 * (rounds[0] + 1), 3 * (sum(rounds) + 1)]
    for fitted, level in zip(shared, levels):
        _assert_exact(fitted.pruner, level)
    model.load_state_dict(state)
    alone = fit_ugs(model, data, levels[0], config, TRAIN, progress=False)
    assert alone.result.test == shared[0].result.test
    assert all(torch.equal(a.mask, b.mask) for a, b in zip(alone.pruner.engine, shared[0].pruner.engine))
    with pytest.raises(ValueError, match="below the start"):
        config.level_schedules(list(reversed(levels)))


@pytest.mark.parametrize("method", ["random", "oneshot"])
def test_one_loop_baselines_resume_exactly(method):
    data = tiny_graph(num_features=10)
    config = _config(method)
    states = {}

    def fit(**loop):
        from gnnprune.experiment import build_seed_model
        model = build_seed_model(config, data, 0)
        return fit_method(config, model, data, TRAIN, progress=False, **loop)

    whole = fit(checkpoint_every=1, on_checkpoint=lambda s: states.setdefault(s["epoch"], copy.deepcopy(s)))
    resume_at = TRAIN.epochs + 3 if method == "oneshot" else 5  # oneshot: after the cut
    resumed = fit(resume_from=states[resume_at])
    assert (resumed.result.best_epoch, resumed.result.test) == (whole.result.best_epoch, whole.result.test)
    assert resumed.result.history == whole.result.history
    assert all(torch.equal(a.mask, b.mask) for a, b in zip(whole.pruner.engine, resumed.pruner.engine))


def test_ugs_refuses_to_resume():
    data = tiny_graph(num_features=10)
    model = GCN(data.num_features, 8, data.num_classes)
    with pytest.raises(ValueError, match="ugs runs cannot be resumed"):
        fit_method(_config("ugs"), model, data, TRAIN, progress=False, resume_from={"epoch": 1})
