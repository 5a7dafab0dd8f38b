"""One-shot pruning with an early-bird monitor on its dense phase."""
import copy
import dataclasses
import json

import torch

from gnnprune.cli import main
from gnnprune.config import ExperimentConfig, ModelConfig
from gnnprune.copruning import EDGES, FEATURES, CoPruner, EdgeRanking, FeatureScore, PruneTargets
from gnnprune.experiment import build_seed_model, fit_method
from gnnprune.masks import EarlyBirdConfig
from gnnprune.methods import OneShotConfig
from gnnprune.nn import GCN
from gnnprune.training import TrainConfig
from helpers import tiny_graph

TARGETS = PruneTargets(weights=0.7, edges=0.4, features=0.5)
TRAIN = TrainConfig(epochs=12, lr=0.01, seed=0)


def _config(early_bird):
    return ExperimentConfig(dataset="tiny", model=ModelConfig("gcn", 8, 2, 0.0), train=TRAIN, method="oneshot",
                            targets=TARGETS, oneshot=OneShotConfig(early_bird=early_bird))


def _fit(config, data, **loop):
    return fit_method(config, build_seed_model(config, data, 0), data, TRAIN, progress=False, **loop)


def test_would_pick_changes_nothing_and_matches_the_cut():
    data = tiny_graph(num_features=10)
    torch.manual_seed(0)
    model = GCN(data.num_features, 8, data.num_classes)
    pruner = CoPruner(model, data, learn_edge_weights=True, learn_feature_gates=True)
    with torch.no_grad():
        pruner.edge_logit.copy_(torch.randn_like(pruner.edge_logit))
        pruner.feature_gate.copy_(torch.randn_like(pruner.feature_gate))
    before = copy.deepcopy((pruner.state_dict(), model.state_dict()))
    picked = pruner.would_pick(TARGETS, edge_ranking=EdgeRanking.GLOBAL, feature_score=FeatureScore.MAGNITUDE)
    after = (pruner.state_dict(), model.state_dict())
    for old, new in zip(before, after):
        leaves = zip(torch.utils._pytree.tree_leaves(old), torch.utils._pytree.tree_leaves(new))
        assert all(torch.equal(a, b) if torch.is_tensor(a) else a == b for a, b in leaves)
    pruner.update(TARGETS, edge_ranking=EdgeRanking.GLOBAL, feature_score=FeatureScore.MAGNITUDE)
    assert torch.equal(picked["edges"], pruner.engine.mask(EDGES))
    assert torch.equal(picked["features"], pruner.engine.mask(FEATURES))
    assert torch.equal(picked["weights"], torch.cat([s.mask.view(-1) for s in pruner.engine.sites("weight")]))


def test_a_loose_monitor_cuts_as_soon_as_its_window_is_full():
    # threshold 1 accepts any masks: the window of 2 is full after dense epochs 0 and 1, so the
    # monitor fires at epoch 1 and the cut comes at epoch 2 instead of 12; fine-tuning keeps 12 epochs
    data = tiny_graph(num_features=10)
    fitted = _fit(_config(EarlyBirdConfig(window=2, threshold=1.0)), data)
    result = fitted.result
    assert [u["epoch"] for u in result.updates] == [2]
    assert result.epochs_run == 2 + TRAIN.epochs
    assert [h["epoch"] for h in result.history] == list(range(2 + TRAIN.epochs))
    assert result.best_epoch >= 2
    record = result.updates[0]["early_bird"]
    assert (record["fired_epoch"], record["dense_epochs"], record["epochs_saved"]) == (1, TRAIN.epochs, 10)
    assert [d["epoch"] for d in record["distances"]] == [1]
    assert fitted.pruner.engine.sparsity(EDGES) == 1 - round(0.6 * data.edges.num_edges) / data.edges.num_edges


def test_a_monitor_that_never_fires_leaves_the_run_as_without_one():
    data = tiny_graph(num_features=10)
    plain = _fit(_config(None), data).result
    # window 13 cannot fill in 12 dense epochs
    watched = _fit(_config(EarlyBirdConfig(window=13, threshold=1.0)), data).result
    assert watched.history == plain.history
    assert (watched.best_epoch, watched.test) == (plain.best_epoch, plain.test)
    record = watched.updates[0]["early_bird"]
    assert (record["fired_epoch"], record["epochs_saved"], record["distances"]) == (None, 0, [])


def test_early_bird_run_resumes_exactly():
    data = tiny_graph(num_features=10)
    config = _config(EarlyBirdConfig(window=2, threshold=1.0))
    states = {}
    whole = _fit(config, data, checkpoint_every=1,
                 on_checkpoint=lambda s: states.setdefault(s["epoch"], copy.deepcopy(s)))
    for resume_at in (1, 5):  # before the monitor fired, after the cut
        resumed = _fit(config, data, resume_from=states[resume_at])
        assert resumed.result.history == whole.result.history
        assert resumed.result.updates == whole.result.updates
        assert (resumed.result.best_epoch, resumed.result.test) == (whole.result.best_epoch, whole.result.test)


def test_cli_flags_reach_the_config_and_the_metrics(tmp_path):
    spec = "synthetic:num_nodes=200,num_classes=3,num_features=12,num_val=30,num_test=40"
    out = tmp_path / "run"
    assert main(["prune", "--dataset", spec, "--method", "oneshot", "--weight-sparsity", "0.5", "--edge-sparsity",
                 "0.3", "--epochs", "6", "--hidden", "8", "--threads", "1", "--no-progress",
                 "--early-bird-window", "2", "--early-bird-threshold", "1", "--out", str(out)]) == 0
    metrics = json.loads((out / "seed-0" / "metrics.json").read_text())
    assert metrics["config"]["oneshot"]["early_bird"] == {"window": 2, "threshold": 1.0, "min_epochs": 0}
    assert metrics["early_bird"]["fired_epoch"] == 1
    assert metrics["early_bird"]["epochs_saved"] == 4
    assert metrics["epochs"] == 2 + 6
    from gnnprune.runs import config_from_dict
    assert config_from_dict(metrics["config"]).oneshot.early_bird == EarlyBirdConfig(window=2, threshold=1.0)


def test_only_one_flag_takes_the_other_default():
    from gnnprune.cli import _config_from_args, build_parser
    args = build_parser().parse_args(["prune", "--dataset", "cora", "--method", "oneshot", "--weight-sparsity", "0.5",
                                      "--early-bird-threshold", "0.05", "--out", "unused"])
    assert _config_from_args(args).oneshot.early_bird == EarlyBirdConfig(window=5, threshold=0.05)
    args = build_parser().parse_args(["prune", "--dataset", "cora", "--method", "oneshot", "--weight-sparsity", "0.5",
                                      "--out", "unused"])
    assert _config_from_args(args).oneshot.early_bird is None
    args = build_parser().parse_args(["prune", "--dataset", "cora", "--method", "ugs", "--weight-sparsity", "0.5",
                                      "--early-bird-min-epochs", "40", "--out", "unused"])
    assert _config_from_args(args).ugs.early_bird == EarlyBirdConfig(window=5, threshold=0.1, min_epochs=40)


def test_a_loose_monitor_ends_every_ugs_round_after_its_second_epoch():
    from gnnprune.methods import UGSConfig, fit_ugs
    data = tiny_graph(num_features=10)
    torch.manual_seed(0)
    model = GCN(data.num_features, 8, data.num_classes, dropout=0.0)
    targets = PruneTargets(weights=0.5, edges=0.1, features=0.3)
    config = UGSConfig(round_epochs=4, early_bird=EarlyBirdConfig(window=2, threshold=1.0))
    fitted = fit_ugs(model, data, targets, config, TRAIN, progress=False)
    rounds = fitted.result.updates
    assert len(rounds) == len(config.schedule(targets))
    assert fitted.result.epochs_run == 2 * len(rounds) + 4  # rounds stop after epoch 1; the ticket trains 4
    for entry in rounds:
        record = entry["early_bird"]
        assert (record["fired_epoch"], record["dense_epochs"], record["epochs_saved"]) == (1, 4, 2)
        assert entry["best_epoch"] <= 1
    assert fitted.pruner.engine.site(EDGES).live == data.edges.num_edges - round(0.1 * data.edges.num_edges)


def test_ugs_cli_records_the_epochs_saved_over_all_rounds(tmp_path):
    spec = "synthetic:num_nodes=200,num_classes=3,num_features=12,num_val=30,num_test=40"
    out = tmp_path / "run"
    assert main(["prune", "--dataset", spec, "--method", "ugs", "--weight-sparsity", "0.2", "--edge-sparsity",
                 "0.05", "--epochs", "4", "--hidden", "8", "--threads", "1", "--no-progress",
                 "--early-bird-window", "3", "--early-bird-threshold", "1", "--out", str(out)]) == 0
    metrics = json.loads((out / "seed-0" / "metrics.json").read_text())
    assert metrics["config"]["ugs"]["early_bird"] == {"window": 3, "threshold": 1.0, "min_epochs": 0}
    assert metrics["config"]["oneshot"]["early_bird"] is None
    rounds = metrics["early_bird"]["rounds"]
    assert len(rounds) == 1 and rounds[0]["fired_epoch"] == 2
    assert metrics["early_bird"]["epochs_saved"] == 1
    assert metrics["epochs"] == 3 + 4


def test_a_ugs_round_monitor_measures_from_the_masks_the_round_starts_with():
    from types import SimpleNamespace

    from gnnprune.methods import UGSConfig, UGSRound

    data = tiny_graph(num_features=10)
    torch.manual_seed(0)
    pruner = CoPruner(GCN(data.num_features, 8, data.num_classes, dropout=0.0), data)
    pruner.update(PruneTargets(weights=0.5, edges=0.3, features=0.2),
                  prune_scores={EDGES: torch.arange(data.edges.num_edges, dtype=torch.float)},
                  edge_ranking=EdgeRanking.GLOBAL)  # an earlier round's result
    config = UGSConfig(early_bird=EarlyBirdConfig(window=2, threshold=0.0))
    hooks = UGSRound(config, weight_masks={}, sparsity=PruneTargets(weights=0.6, edges=0.4, features=0.3))
    hooks.on_start(SimpleNamespace(pruner=pruner))
    start = pruner.part_masks()
    assert set(hooks.monitor.start) == {"weights", "edges", "features"}
    for part, mask in start.items():
        assert torch.equal(hooks.monitor.start[part], mask)
    assert int((~start["edges"]).sum()) == round(0.3 * data.edges.num_edges)
