"""Lottery jackpots for GNNs: a mask searched in a trained dense model's frozen weights."""
import copy
import json

import pytest
import torch

from gnnprune import load_run
from gnnprune.cli import main
from gnnprune.config import ExperimentConfig, ModelConfig
from gnnprune.copruning import EDGES, FEATURES, WEIGHT_PREFIX, CoPruner, PruneTargets
from gnnprune.experiment import build_seed_model, fit_method
from gnnprune.masks import kept_count
from gnnprune.methods import Dense, JackpotConfig, fit_jackpot, train_once
from gnnprune.training import TrainConfig
from helpers import tiny_graph

TARGETS = PruneTargets(weights=0.7, edges=0.4, features=0.5)
TRAIN = TrainConfig(epochs=15, lr=0.01, seed=0)
SYNTHETIC = "synthetic:num_nodes=300,num_classes=3,num_features=16,num_val=60,num_test=100"


def test_search_keeps_every_weight_bit_identical_and_every_part_at_its_exact_count():
    data = tiny_graph(num_features=10)
    config = ExperimentConfig(dataset="tiny", model=ModelConfig("gcn", 8, 2, 0.0), train=TRAIN, method="jackpot",
                              targets=TARGETS)
    model = build_seed_model(config, data, 0)
    dense = train_once(Dense(), model, data, TRAIN, learn_gates=True, progress=False)
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    gates = copy.deepcopy(dense.pruner.state_dict())
    fitted = fit_jackpot(model, data, TARGETS, JackpotConfig(search_epochs=20), TRAIN, progress=False, dense=dense)
    pruner = fitted.pruner
    for name, param in model.named_parameters():
        if name in pruner.weights:
            mask = pruner.weight_mask(name)
            assert torch.equal(param[mask], params[name][mask]) and bool((param[~mask] == 0).all())
        else:
            assert torch.equal(param, params[name])
    assert torch.equal(pruner.edge_logit, gates["edge_logit"])
    assert torch.equal(pruner.feature_gate, gates["feature_gate"])
    for name, param in pruner.weights.items():
        assert pruner.engine.site(WEIGHT_PREFIX + name).live == kept_count(param.numel(), TARGETS.weights)
    assert pruner.engine.site(EDGES).live == kept_count(data.edges.num_edges, TARGETS.edges)
    assert pruner.engine.site(FEATURES).live == kept_count(data.num_features, TARGETS.features)
    record = fitted.result.updates[0]["jackpot"]
    assert record["weights_unchanged"] is True
    assert fitted.result.epochs_run == TRAIN.epochs + 20
    assert len(fitted.result.history) == 20


def test_fine_tune_is_off_by_default_and_changes_the_kept_weights_when_asked():
    data = tiny_graph(num_features=10)
    base = ExperimentConfig(dataset="tiny", model=ModelConfig("gcn", 8, 2, 0.0), train=TRAIN, method="jackpot",
                            targets=TARGETS, jackpot=JackpotConfig(search_epochs=5))
    plain = fit_method(base, build_seed_model(base, data, 0), data, TRAIN, progress=False)
    assert "finetuned" not in plain.result.updates[0]["jackpot"]
    tuned_config = base.overridden(jackpot={"finetune_epochs": 5})
    tuned = fit_method(tuned_config, build_seed_model(tuned_config, data, 0), data, TRAIN, progress=False)
    record = tuned.result.updates[0]["jackpot"]
    assert record["weights_unchanged"] is True and record["finetuned"]["weights_unchanged"] is False
    assert tuned.result.epochs_run == TRAIN.epochs + 5 + 5


def test_without_gates_only_weights_can_be_searched():
    with pytest.raises(ValueError, match="edges and features only"):
        JackpotConfig(dense_gates=False).check_targets(PruneTargets(weights=0.5, edges=0.1))
    data = tiny_graph()
    torch.manual_seed(0)
    from gnnprune.nn import GCN

    model = GCN(data.num_features, 4, data.num_classes)
    dense = train_once(Dense(), model, data, TrainConfig(epochs=3, seed=0), progress=False)
    fitted = fit_jackpot(model, data, PruneTargets(weights=0.5), JackpotConfig(search_epochs=3, dense_gates=False),
                         TrainConfig(epochs=3, seed=0), progress=False, dense=dense)
    assert fitted.pruner.engine.site(EDGES).live == data.edges.num_edges
    assert fitted.result.updates[0]["jackpot"]["weights_unchanged"] is True


def test_cli_jackpot_from_a_dense_run_loads_and_exports(tmp_path, capsys):
    common = ["--dataset", SYNTHETIC, "--hidden", "8", "--epochs", "15", "--seeds", "0,1", "--no-progress"]
    assert main(["prune", *common, "--method", "dense", "--out", str(tmp_path / "dense")]) == 0
    assert main(["prune", *common, "--method", "jackpot", "--weight-sparsity", "0.8", "--search-epochs", "10",
                 "--jackpot-from", str(tmp_path / "dense"), "--out", str(tmp_path / "jackpot")]) == 0
    record = json.loads((tmp_path / "jackpot" / "metrics.json").read_text())
    assert record["status"] == "done" and record["config"]["jackpot"]["dense_gates"] is False
    for seed in (0, 1):
        seed_metrics = json.loads((tmp_path / "jackpot" / f"seed-{seed}" / "metrics.json").read_text())
        dense_metrics = json.loads((tmp_path / "dense" / f"seed-{seed}" / "metrics.json").read_text())
        assert seed_metrics["jackpot"]["weights_unchanged"] is True
        assert seed_metrics["jackpot"]["dense"]["test"] == pytest.approx(dense_metrics["test"], abs=1e-6)
        assert all(entry["live"] == kept_count(entry["entries"], 0.8)
                   for entry in seed_metrics["sparsity"]["per_weight"].values())
        assert seed_metrics["epochs"] == 15 + 10
        run, source = load_run(tmp_path / "jackpot", seed), load_run(tmp_path / "dense", seed)
        assert run.evaluate()["test"] == pytest.approx(seed_metrics["test"], abs=1e-6)
        dense_state = source.model.state_dict()
        for name, value in run.model.state_dict().items():
            live = value != 0
            assert torch.equal(value[live], dense_state[name][live])
    assert main(["export", str(tmp_path / "jackpot"), "--seed", "1", "--out", str(tmp_path / "export")]) == 0
    assert (tmp_path / "export" / "architecture.json").exists()
