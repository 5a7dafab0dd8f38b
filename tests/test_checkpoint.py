import dataclasses
import json
import random

import numpy as np
import pytest
import torch

from gnnprune import experiment
from gnnprune.checkpoint import (CheckpointError, NonFiniteError, TrainingInterrupted, load_checkpoint, rng_state,
                                 save_checkpoint, set_rng_state)
from gnnprune.config import ExperimentConfig, ModelConfig
from gnnprune.copruning import CoPruner, PruneTargets
from gnnprune.data.synthetic import CSBMConfig, csbm
from gnnprune.experiment import ResumeError, plan_resume, run_experiment
from gnnprune.io import atomic_torch_save, safe_torch_load
from gnnprune.methods import CGP, CGPConfig, Dense
from gnnprune.nn import GCN
from gnnprune.training import TrainConfig, train

EPOCHS = 30
TARGETS = PruneTargets(weights=0.8, edges=0.5, features=0.5)
CGP_CONFIG = CGPConfig(prune_start=4, prune_end=20, update_every=4)
TRAIN_CONFIG = TrainConfig(epochs=EPOCHS, pseudo_label_weight=0.3, pseudo_label_warmup=10, gate_lr=0.1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny graphs: a second thread only adds contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def graph():
    return csbm(CSBMConfig(num_nodes=300, num_classes=3, num_features=24, avg_degree=5, num_val=60, num_test=120,
                           seed=3))


def _setup(data, seed=0):
    torch.manual_seed(seed)
    model = GCN(data.num_features, 16, data.num_classes, dropout=0.5)
    pruner = CoPruner(model, data, learn_edge_weights=True, learn_feature_gates=True)
    return model, pruner


RESUME_EPOCHS = (2, 10, EPOCHS - 1)  # before pruning, after two mask updates, at the end


def _train(data, **kwargs):
    model, pruner = _setup(data)
    return train(model, data, pruner, CGP(CGP_CONFIG, TARGETS), TRAIN_CONFIG, progress=False, **kwargs)


def _same_result(a, b):
    assert (a.best_epoch, a.val, a.test, a.train) == (b.best_epoch, b.val, b.test, b.train)
    assert a.history == b.history and a.updates == b.updates
    for key in a.model_state:
        assert torch.equal(a.model_state[key], b.model_state[key]), key
    for name, entry in a.pruner_state["masks"].items():
        assert torch.equal(entry["mask"], b.pruner_state["masks"][name]["mask"]), name
    assert torch.equal(a.pruner_state["edge_logit"], b.pruner_state["edge_logit"])


@pytest.fixture(scope="module")
def full_run(graph, tmp_path_factory):
    """An uninterrupted CGP run with dropout and pseudo-labels, checkpointed at :data:`RESUME_EPOCHS`."""
    folder = tmp_path_factory.mktemp("checkpoints")

    def keep(state):
        if state["epoch"] in RESUME_EPOCHS:
            save_checkpoint(state, folder / f"ckpt-{state['epoch']}.pt")

    result = _train(graph, checkpoint_every=1, on_checkpoint=keep)
    assert len(result.updates) == 5 and result.best_epoch >= 20
    return result, folder


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    atomic_torch_save(rng_state(), tmp_path / "rng.pt")
    first = (torch.rand(3), random.random(), np.random.rand(2))
    set_rng_state(safe_torch_load(tmp_path / "rng.pt"))
    again = (torch.rand(3), random.random(), np.random.rand(2))
    assert torch.equal(first[0], again[0]) and first[1] == again[1] and np.array_equal(first[2], again[2])


@pytest.mark.parametrize("resume_epoch", RESUME_EPOCHS)
def test_resume_from_a_checkpoint_is_bit_identical(graph, full_run, resume_epoch):
    full, folder = full_run
    resumed = _train(graph, resume_from=load_checkpoint(folder / f"ckpt-{resume_epoch}.pt"))
    _same_result(full, resumed)


def test_resume_is_not_trivially_equal_to_a_fresh_start(graph, full_run):
    """With the random generators of another epoch (dropout) the continuation differs: the test above can fail."""
    full, folder = full_run
    state = load_checkpoint(folder / "ckpt-10.pt")
    state["rng"] = load_checkpoint(folder / "ckpt-2.pt")["rng"]
    shifted = _train(graph, resume_from=state)
    assert shifted.history[:11] == full.history[:11]
    assert shifted.history[11:] != full.history[11:]


def test_resume_with_other_settings_or_method_is_refused(graph, full_run):
    state = load_checkpoint(full_run[1] / "ckpt-10.pt")
    model, pruner = _setup(graph)
    with pytest.raises(ValueError, match="other settings: epochs, lr"):
        train(model, graph, pruner, CGP(CGP_CONFIG, TARGETS), dataclasses.replace(TRAIN_CONFIG, lr=0.02, epochs=50),
              progress=False, resume_from=state)
    with pytest.raises(ValueError, match="of method 'cgp', not 'dense'"):
        train(model, graph, pruner, Dense(), TRAIN_CONFIG, progress=False, resume_from=state)
    with pytest.raises(ValueError, match="cannot be resumed exactly"):  # saved by a method without state_dict()
        train(model, graph, pruner, CGP(CGP_CONFIG, TARGETS), TRAIN_CONFIG, progress=False,
              resume_from={**state, "method": {"name": "cgp", "state": None}})


def test_stop_request_checkpoints_the_finished_epoch(graph, tmp_path):
    saved = []
    polls = iter(range(100))
    model, pruner = _setup(graph)
    with pytest.raises(TrainingInterrupted) as info:
        train(model, graph, pruner, CGP(CGP_CONFIG, TARGETS), TRAIN_CONFIG, progress=False, checkpoint_every=5,
              on_checkpoint=lambda s: saved.append(s["epoch"]), should_stop=lambda: next(polls) == 7)
    assert info.value.epoch == 7
    assert saved == [4, 7]


class _PoisonAt(Dense):
    """Dense training whose first weight turns NaN at the start of ``epoch``."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_start(self, run, epoch):
        if epoch == self.epoch:
            with torch.no_grad():
                next(run.model.parameters()).view(-1)[0] = float("nan")


def test_non_finite_loss_stops_naming_the_epoch_and_keeps_the_last_good_checkpoint(graph, tmp_path):
    model, _ = _setup(graph)
    pruner = CoPruner(model, graph)
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(NonFiniteError, match="training loss became nan at epoch 7") as info:
        train(model, graph, pruner, _PoisonAt(7), TRAIN_CONFIG, progress=False, checkpoint_every=5,
              on_checkpoint=lambda s: save_checkpoint(s, path))
    assert info.value.epoch == 7
    state = load_checkpoint(path)
    assert state["epoch"] == 4
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_non_finite_parameter_after_a_step_is_caught(graph):
    model, _ = _setup(graph)
    pruner = CoPruner(model, graph)
    config = dataclasses.replace(TRAIN_CONFIG, lr=float("inf"))
    with pytest.raises(NonFiniteError, match="parameter .* became non-finite at epoch 0"):
        train(model, graph, pruner, Dense(), config, progress=False)


def test_truncated_tampered_and_foreign_checkpoints_give_one_clear_error(full_run, tmp_path):
    good = full_run[1] / "ckpt-2.pt"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    tampered = tmp_path / "tampered.pt"
    torch.save({"format": "gnnprune-checkpoint", "payload": Evil()}, tampered)
    foreign = tmp_path / "model.pt"
    atomic_torch_save({"w": torch.ones(2)}, foreign)
    incomplete = tmp_path / "incomplete.pt"
    atomic_torch_save({"format": "gnnprune-checkpoint", "version": 1, "epoch": 3}, incomplete)
    not_pickle = tmp_path / "text.pt"
    not_pickle.write_text("hello")
    for path, reason in [(truncated, "not a valid gnnprune file"), (tampered, "not a valid gnnprune file"),
                         (foreign, "not a gnnprune checkpoint"), (incomplete, "lacks train_config"),
                         (not_pickle, "not a valid gnnprune file"), (tmp_path / "none.pt", "not found")]:
        with pytest.raises(CheckpointError, match=reason) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert load_checkpoint(good)["epoch"] == 2


# run folders --------------------------------------------------------------------------------------------------
def _experiment(seeds=(0, 1), **train):
    return ExperimentConfig(dataset="synthetic", model=ModelConfig("gcn", 16, 2, 0.5),
                            train=dataclasses.replace(TRAIN_CONFIG, epochs=20, **train),
                            method="cgp", targets=TARGETS, cgp=dataclasses.replace(CGP_CONFIG, prune_end=12),
                            seeds=seeds)


def _comparable(record):
    return [{k: v for k, v in run.items() if not k.endswith("time_s")} for run in record["runs"]]


def test_multi_seed_run_folder_resumes_without_rerunning_finished_seeds(graph, tmp_path, monkeypatch):
    config = _experiment()
    whole = run_experiment(config, graph, tmp_path / "whole", progress=False, checkpoint_every=4)
    out = tmp_path / "cut"
    polls = iter(range(1000))
    with pytest.raises(TrainingInterrupted) as info:  # seed 0: polls 0-20; seed 1 stops after epoch 9 (mid-schedule)
        run_experiment(config, graph, out, progress=False, checkpoint_every=4, should_stop=lambda: next(polls) == 31)
    assert (info.value.seed, info.value.epoch) == (1, 9)
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "interrupted"
    assert record["interrupted"] == {"seed": 1, "after_epoch": 9, "checkpoint": str(out / "seed-1" / "checkpoint.pt")}
    assert len(record["runs"]) == 1 and not (out / "seed-1" / "metrics.json").exists()
    seed0 = {p.name: p.read_bytes() for p in (out / "seed-0").iterdir()}

    trained = []
    real_run_seed = experiment.run_seed
    monkeypatch.setattr(experiment, "run_seed", lambda c, d, seed, *a, **k: trained.append(
        (seed, k["resume_from"]["epoch"])) or real_run_seed(c, d, seed, *a, **k))
    resumed = run_experiment(config, graph, out, progress=False, checkpoint_every=4,
                             resume=plan_resume(config, graph, out))
    assert trained == [(1, 9)]
    assert {p.name: p.read_bytes() for p in (out / "seed-0").iterdir()} == seed0
    assert resumed["status"] == "done" and "interrupted" not in resumed
    assert _comparable(resumed) == _comparable(whole)
    assert json.loads((out / "metrics.json").read_text())["status"] == "done"


def test_resume_with_another_config_names_the_keys_and_touches_nothing(graph, tmp_path):
    config = _experiment(seeds=(0,))
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        run_experiment(config, graph, out, progress=False, should_stop=lambda: True)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    other = dataclasses.replace(config, seeds=(0, 1), train=dataclasses.replace(config.train, lr=0.05))
    with pytest.raises(ResumeError, match=r"differ from the run's in seeds, train\.lr$"):
        plan_resume(other, graph, out)
    smaller = csbm(CSBMConfig(num_nodes=290, num_classes=3, num_features=24, avg_degree=5, num_val=60, num_test=120))
    with pytest.raises(ResumeError, match="data.nodes"):
        plan_resume(config, smaller, out)
    (out / "seed-0").mkdir()
    (out / "seed-0" / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="seed-0/checkpoint.pt"):
        plan_resume(config, graph, out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "checkpoint.pt"} == \
        {p: b for p, b in before.items() if p.name != "checkpoint.pt"}
