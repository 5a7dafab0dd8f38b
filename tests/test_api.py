"""The public API (import gnnprune as gp) and its one source of defaults."""
import dataclasses
import inspect
import json
import subprocess
import sys

import pytest
import torch

import gnnprune as gp
from gnnprune.cli import _config_from_args, build_parser, main
from gnnprune.training import TrainingRun
from helpers import REPO

REQUIRED = {"prune", "attach", "PruneResult", "CoPruner", "PruneTargets", "PruneMethod", "Method", "CGP", "CGPConfig",
            "Dense", "RandomMasks", "OneShot", "UGSConfig", "train", "TrainConfig", "load_dataset", "build_model",
            "ExperimentConfig", "from_pyg", "PyGModel"}


def test_one_import_gives_every_public_name_and_never_the_cnn_side():
    code = ("import sys, gnnprune as gp\n"
            "assert 'torch' not in sys.modules, 'import gnnprune loads nothing heavy'\n"
            "values = {name: getattr(gp, name) for name in gp.__all__}\n"
            "assert all(value is not None for value in values.values())\n"
            "from gnnprune import *\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'cnn_bridge'], 'cnn_bridge imported'\n"
            "print(sorted(gp.__all__))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    names = set(eval(result.stdout))  # noqa: S307 - our own printed list
    assert REQUIRED <= names and {"load_run", "load_exported", "export_run", "predict"} <= names
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        gp.nothing  # noqa: B018


# one source of defaults ------------------------------------------------------------------------------------
def test_the_dataclass_defaults_are_those_of_the_library_configuration():
    assert gp.CGPConfig() == gp.CGPConfig.for_epochs(200)
    assert gp.CGPConfig.for_epochs(120) == gp.CGPConfig(prune_start=6, prune_end=90)
    update = inspect.signature(gp.CoPruner.update).parameters
    assert update["edge_ranking"].default is gp.CGPConfig().edge_ranking
    assert update["feature_score"].default is gp.CGPConfig().feature_score
    assert (gp.TrainConfig().gate_lr, gp.TrainConfig(epochs=120).pseudo_label_warmup) == (0.1, 30)
    config = gp.ExperimentConfig.for_model("gcn", targets=gp.PruneTargets(0.9, 0.5, 0.5))
    assert config.method is gp.PruneMethod.CGP
    assert (config.train.pseudo_label_weight, config.train.pseudo_label_warmup, config.train.gate_lr) == (0.3, 50, 0.1)
    assert (config.cgp.prune_start, config.cgp.prune_end) == (10, 150)
    # the dataclasses alone (gp.train with TrainConfig(), CGPConfig()) run what the command runs for gcn
    assert config.cgp == gp.CGPConfig() and config.weight_distribution is gp.WeightDistribution.UNIFORM
    assert config.train == dataclasses.replace(gp.TrainConfig(), pseudo_label_weight=gp.CGP.pseudo_label_weight)
    assert dataclasses.replace(config, seeds=(0,)) == gp.ExperimentConfig.for_model(
        "gcn", method="cgp", targets=gp.PruneTargets(0.9, 0.5, 0.5), epochs=200)


@pytest.mark.parametrize("model, method, weight, distribution, prior, epochs", [
    ("gcn", "cgp", 0.3, "uniform", 0.0, 200),
    ("gcn", "ugs", 0.0, "uniform", 0.0, 200),  # baselines as published: supervised
    ("gcn", "oneshot", 0.0, "uniform", 0.0, 200),
    ("gcn", "random", 0.0, "uniform", 0.0, 200),
    ("gat", "cgp", 0.3, "erk", 0.0, 200),
    ("gat", "ugs", 0.0, "uniform", 0.0, 200),  # UGS is uniform only
    ("gcn2", "cgp", 0.3, "uniform", 1e-4, 400),
    (None, "cgp", 0.3, "uniform", 0.0, 200),  # a model of your own: the library's plain defaults
])
def test_model_and_method_defaults(model, method, weight, distribution, prior, epochs):
    config = gp.ExperimentConfig.for_model(model, method=method, targets=gp.PruneTargets(0.5, 0.2, 0.2))
    assert config.train.pseudo_label_weight == weight
    assert config.weight_distribution.value == distribution
    assert (config.cgp.edge_prior, config.train.epochs) == (prior, epochs)
    assert config.cgp.prune_end == 3 * epochs // 4


def test_dense_targets_default_to_the_dense_method_and_unknown_methods_are_named():
    assert gp.ExperimentConfig.for_model("gcn").method is gp.PruneMethod.DENSE
    with pytest.raises(ValueError, match="unknown method 'lth'; choose from dense, random, oneshot, ugs, cgp"):
        gp.ExperimentConfig.for_model("gcn", method="lth")


def test_the_cli_only_overrides_what_its_flags_set():
    parse = lambda *extra: _config_from_args(build_parser().parse_args(  # noqa: E731
        ["prune", "--dataset", "cora", "--out", "unused", "--weight-sparsity", "0.5", *extra]))
    assert parse() == gp.ExperimentConfig.for_model("gcn", dataset="cora", targets=gp.PruneTargets(0.5))
    assert parse("--method", "ugs").train.pseudo_label_weight == 0.0
    assert parse("--method", "ugs", "--pseudo-label-weight", "0.3").train.pseudo_label_weight == 0.3
    custom = parse("--epochs", "40", "--lr", "0.02", "--edge-ranking", "global", "--hidden", "8")
    expected = gp.ExperimentConfig.for_model("gcn", dataset="cora", targets=gp.PruneTargets(0.5), epochs=40)
    assert custom == expected.overridden(train={"lr": 0.02}, cgp={"edge_ranking": gp.EdgeRanking.GLOBAL},
                                         model={"hidden_channels": 8})


def test_overridden_keeps_none_and_replaces_nested_fields():
    config = gp.ExperimentConfig.for_model("gcn", targets=gp.PruneTargets(0.5))
    changed = config.overridden(train={"lr": 0.05, "gate_lr": None}, cgp={"edge_prior": 1e-3}, seeds=(1, 2),
                                minibatch=None)
    assert (changed.train.lr, changed.train.gate_lr, changed.cgp.edge_prior, changed.seeds) == (0.05, 0.1, 1e-3, (1, 2))
    assert config.overridden() == config
    with pytest.raises(ValueError, match=r"prune_end \(150\) must be < epochs \(100\)"):
        config.overridden(train={"epochs": 100})


def test_the_method_decides_a_missing_pseudo_label_weight(small_csbm):
    model = gp.build_model("gcn", small_csbm.num_features, small_csbm.num_classes, 8)
    pruner = gp.CoPruner(model, small_csbm)
    run = lambda method: TrainingRun(model, small_csbm, pruner, None, gp.TrainConfig(), method=method)  # noqa: E731
    assert gp.TrainConfig().pseudo_label_weight is None
    assert run(gp.CGP(gp.CGPConfig(), gp.PruneTargets(0.5))).config.pseudo_label_weight == 0.3
    assert run(gp.Dense()).config.pseudo_label_weight == 0.0
    explicit = TrainingRun(model, small_csbm, pruner, None, gp.TrainConfig(pseudo_label_weight=0.1), method=gp.Dense())
    assert explicit.config.pseudo_label_weight == 0.1


def test_methods_share_one_base_with_no_op_hooks():
    for method in gp.PruneMethod:
        assert issubclass(method.hooks, gp.Method)
    base = gp.Method()
    assert (base.penalty(None), base.selectable(0), base.state_dict()) == (None, True, {})


# CLI and library: the same run --------------------------------------------------------------------------------
SYNTHETIC = "synthetic:num_nodes=300,num_classes=3,num_features=16,num_val=60,num_test=100"


def test_cli_and_library_give_bit_identical_metrics(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["prune", "--dataset", SYNTHETIC, "--weight-sparsity", "0.8", "--edge-sparsity", "0.3",
                     "--feature-sparsity", "0.25", "--epochs", "24", "--hidden", "8", "--seed", "3",
                     "--out", str(tmp_path / "run"), "--no-progress"])
        assert code == 0
        config = gp.ExperimentConfig.for_model("gcn", dataset=SYNTHETIC, targets=gp.PruneTargets(0.8, 0.3, 0.25),
                                               epochs=24, seeds=(3,)).overridden(model={"hidden_channels": 8})
        result = gp.prune("gcn", gp.load_dataset(SYNTHETIC), config=config, seed=3, progress=False)
    finally:
        torch.set_num_threads(threads)
    cli = json.loads((tmp_path / "run" / "seed-3" / "metrics.json").read_text())
    timings = {"train_time_s", "epoch_time_s", "inference_time_s", "malloc"}
    library = json.loads(json.dumps({key: value for key, value in result.metrics.items() if key not in timings}))
    assert library == {key: value for key, value in cli.items() if key not in timings | {"config", "data"}}
    assert cli["config"] == json.loads(json.dumps(config.as_dict()))
    saved = torch.load(tmp_path / "run" / "seed-3" / "model.pt", weights_only=True)
    assert all(torch.equal(saved[key], value) for key, value in result.model.state_dict().items())
    assert torch.equal(torch.load(tmp_path / "run" / "seed-3" / "pruned_graph.pt", weights_only=True)["edge_index"],
                       result.pruned_graph["edge_index"])


def test_prune_refuses_targets_beside_a_config(small_csbm):
    config = gp.ExperimentConfig.for_model("gcn", targets=gp.PruneTargets(0.5))
    with pytest.raises(ValueError, match="not both"):
        gp.prune("gcn", small_csbm, (0.5, 0, 0), config=config)
    with pytest.raises(ValueError, match="config is for model 'gcn', not 'sgc'"):
        gp.prune("sgc", small_csbm, config=config)
