import json

import pytest
import torch

from gnnprune.cli import main
from gnnprune.config import ExperimentConfig
from gnnprune.copruning import CoPruner, PrunerStateError
from gnnprune.data.synthetic import CSBMConfig, csbm
from gnnprune.experiment import build_pruner, fit_method, learns_gates
from gnnprune.methods import CGPConfig, Dense
from gnnprune.nn import build_model
from gnnprune.runs import RunFileError, config_from_dict, load_run
from gnnprune.training import TrainConfig, evaluate, train

SPEC = "synthetic:num_nodes=300,num_classes=3,num_features=16,num_val=60,num_test=100"
COMMON = ["--dataset", SPEC, "--hidden", "8", "--threads", "1", "--no-progress", "--seeds", "0,1"]
RUNS = {
    "cgp": ["--weight-sparsity", "0.8", "--edge-sparsity", "0.5", "--feature-sparsity", "0.5", "--epochs", "30"],
    "ugs": ["--method", "ugs", "--weight-sparsity", "0.5", "--edge-sparsity", "0.1", "--epochs", "8"],
    "dense": ["--epochs", "30"],
    "oneshot": ["--method", "oneshot", "--weight-sparsity", "0.5", "--epochs", "15"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()
    try:
        for name, extra in RUNS.items():
            assert main(["prune", *COMMON, *extra, "--out", str(folder / name)]) == 0
    finally:
        torch.set_num_threads(threads)
    return folder


@pytest.mark.parametrize("method", sorted(RUNS))
def test_load_run_reproduces_the_recorded_scores_exactly(runs, method):
    for seed in (0, 1):
        run = load_run(runs / method, seed)
        recorded = json.loads((runs / method / f"seed-{seed}" / "metrics.json").read_text())
        scores = run.evaluate()
        assert (scores["val"], scores["test"]) == (recorded["val"], recorded["test"])
        assert run.config.method == method and run.seed == seed
        assert (run.pruner.edge_logit is not None) == learns_gates(run.config)
        assert run.kept_features.numel() == recorded["sparsity"]["kept_features"]
        assert run.graph.selection.num_kept == recorded["sparsity"]["kept_edges"]


def test_load_run_defaults_to_the_first_seed(runs):
    assert load_run(runs / "cgp").seed == 0


def test_pruned_graph_file_is_a_consistent_directed_graph(runs):
    graph = torch.load(runs / "cgp" / "seed-0" / "pruned_graph.pt", weights_only=True)
    kept = graph["undirected_edges"].size(1)
    assert graph["edge_index"].shape == (2, 2 * kept) and graph["edge_weight"].shape == (2 * kept,)
    assert torch.equal(graph["edge_weight"], graph["undirected_edge_weight"].repeat(2))
    assert torch.equal(graph["edge_index"][:, :kept], graph["edge_index"][:, kept:].flip(0))


def test_recorded_config_rebuilds_equal(runs):
    record = json.loads((runs / "cgp" / "metrics.json").read_text())
    config = config_from_dict(record["config"])
    assert isinstance(config, ExperimentConfig) and isinstance(config.cgp, CGPConfig)
    assert json.loads(json.dumps(config.as_dict())) == record["config"]
    with pytest.raises(ValueError, match="unknown key 'config.train.speed'"):
        config_from_dict({**record["config"], "train": {**record["config"]["train"], "speed": 1}})


@pytest.mark.parametrize("method, key", [("cgp", "edge_logit"), ("cgp", "masks"), ("dense", "masks")])
def test_a_tampered_masks_file_names_file_and_key(runs, tmp_path, method, key):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs / method, run)
    path = run / "seed-0" / "masks.pt"
    state = torch.load(path, weights_only=True)
    del state[key]
    torch.save(state, path)
    with pytest.raises(RunFileError) as info:
        load_run(run, 0)
    assert str(info.value) == f"cannot load {path}: missing key '{key}'"


def test_masks_of_another_pruner_kind_are_refused(runs, tmp_path):
    """The old failure: a dense run's masks loaded where edge weights are learned (or the reverse) dropped keys."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs / "cgp", run)
    shutil.copy(runs / "dense" / "seed-0" / "masks.pt", run / "seed-0" / "masks.pt")
    with pytest.raises(RunFileError, match="masks.pt: missing key 'edge_logit'"):
        load_run(run, 0)
    shutil.copytree(runs / "dense", tmp_path / "dense")
    shutil.copy(runs / "cgp" / "seed-0" / "masks.pt", tmp_path / "dense" / "seed-0" / "masks.pt")
    with pytest.raises(RunFileError, match="masks.pt: unexpected key 'edge_logit'"):
        load_run(tmp_path / "dense", 0)


def test_weights_alive_under_dead_masks_are_refused(runs, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs / "cgp", run)
    path = run / "seed-0" / "model.pt"
    state = torch.load(path, weights_only=True)
    state["convs.0.lin.weight"] = torch.ones_like(state["convs.0.lin.weight"])
    torch.save(state, path)
    with pytest.raises(RunFileError, match=r"masks.pt: key 'masks.weight:convs.0.lin.weight' is dead where \d+ weights"):
        load_run(run, 0)


def test_strict_pruner_state_names_the_key(small_csbm):
    model = build_model("gcn", small_csbm.num_features, small_csbm.num_classes, 8)
    plain = CoPruner(model, small_csbm)
    gated = CoPruner(model, small_csbm, learn_edge_weights=True, learn_feature_gates=True)
    with pytest.raises(PrunerStateError, match="unexpected key 'edge_logit'"):
        plain.load_state_dict(gated.state_dict())
    state = gated.state_dict()
    state["feature_gate"] = torch.ones(3)
    with pytest.raises(PrunerStateError, match=r"key 'feature_gate' is \[3\], expected a tensor of shape \[40\]"):
        gated.load_state_dict(state)
    state = plain.state_dict()
    del state["masks"]["edges"]
    with pytest.raises(PrunerStateError, match="missing key 'masks.edges'"):
        plain.load_state_dict(state)


def test_train_leaves_the_selected_epoch_in_place(small_csbm):
    torch.manual_seed(0)
    model = build_model("gcn", small_csbm.num_features, small_csbm.num_classes, 16)
    pruner = CoPruner(model, small_csbm)
    result = train(model, small_csbm, pruner, Dense(), TrainConfig(epochs=25, lr=0.05), progress=False)
    assert result.best_epoch < 24  # the selected epoch is not the last one (else this checks nothing)
    for name, value in model.state_dict().items():
        assert torch.equal(value, result.model_state[name])
    _, scores = evaluate(model, pruner, small_csbm)
    assert (scores["val"], scores["test"]) == (result.val, result.test)


@pytest.mark.parametrize("method, targets", [("dense", (0, 0, 0)), ("random", (0.5, 0.3, 0.3)),
                                             ("oneshot", (0.5, 0.3, 0.3)), ("ugs", (0.2, 0.05, 0.0)),
                                             ("cgp", (0.5, 0.3, 0.3)), ("cgp", (0, 0, 0))])
def test_build_pruner_matches_the_pruner_a_run_saves(method, targets):
    from gnnprune.copruning import PruneTargets

    data = csbm(CSBMConfig(num_nodes=200, num_classes=2, num_features=8, num_val=40, num_test=60, seed=3))
    config = ExperimentConfig(dataset="synthetic", method=method, targets=PruneTargets(*targets),
                              train=TrainConfig(epochs=6), cgp=CGPConfig(prune_start=1, prune_end=3, update_every=1))
    model = build_model("gcn", data.num_features, data.num_classes, 8)
    fitted = fit_method(config, model, data, config.train, progress=False)
    rebuilt = build_pruner(config, build_model("gcn", data.num_features, data.num_classes, 8), data, 0)
    assert rebuilt.state_keys() == set(fitted.pruner.state_dict())
    rebuilt.load_state_dict(fitted.pruner.state_dict())
