"""The benchmark harness: grid validation, CLI-equivalent configs, resumability, report."""
import csv
import json

import pytest

from benchmarks import gnn

GRID = """
name = "t"
datasets = ["synthetic:num_nodes=240,num_features=12,num_val=40,num_test=80"]
models = ["gcn"]
methods = ["dense", "random", "ugs", "cgp"]
seeds = [0, 1]
epochs = 6
levels = [{ weights = 0.5, edges = 0.1, features = 0.2 }, { weights = 0.7, edges = 0.1, features = 0.4 }]
[options]
hidden = 8
prune-start = 1
prune-end = 4
update-every = 1
"""


@pytest.fixture
def grid_file(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    return path


def test_plan_covers_the_grid_and_ugs_levels_share_a_job(grid_file):
    grid = gnn.load_grid(grid_file)
    jobs = gnn.plan(grid)
    runs = [run for job in jobs for run in job]
    assert len(runs) == 2 * (1 + 2 + 2 + 2)  # seeds x (dense + 3 methods x 2 levels)
    assert len({run.id for run in runs}) == len(runs)
    ugs_jobs = [job for job in jobs if job[0].method == "ugs"]
    assert [len(job) for job in ugs_jobs] == [2, 2]


def test_run_config_is_exactly_the_cli_config(grid_file):
    from gnnprune.cli import _config_from_args, build_parser

    grid = gnn.load_grid(grid_file)
    run = gnn.Run(grid.datasets[0], "gcn", "cgp", 1, 1)
    args = gnn.command(grid, run)
    assert args[:2] == ["prune", "--dataset"] and "--weight-sparsity" in args
    expected = _config_from_args(build_parser().parse_args([*args, "--out", "x"]))
    config = gnn.experiment_config(grid, run)
    assert config == expected
    assert config.targets.weights == 0.7 and config.seeds == (1,) and config.model.hidden_channels == 8


def test_early_bird_variants_and_colt_run_their_method_with_its_flags(grid_file):
    from gnnprune.masks import EarlyBirdConfig

    grid = gnn.load_grid(grid_file)
    grid = gnn.Grid(**{**vars(grid), "methods": ("oneshot-eb", "ugs-eb", "colt")})
    jobs = gnn.plan(grid)
    assert [len(job) for job in jobs if job[0].method == "ugs-eb"] == [2, 2]  # one UGS trajectory per seed
    assert [len(job) for job in jobs if job[0].method == "colt"] == [2, 2]  # one COLT trajectory per seed
    for name, method, field in (("oneshot-eb", "oneshot", "oneshot"), ("ugs-eb", "ugs", "ugs")):
        run = gnn.Run(grid.datasets[0], "gcn", name, 0, 0)
        args = gnn.command(grid, run)
        assert args[args.index("--method") + 1] == method
        config = gnn.experiment_config(grid, run)
        assert getattr(config, field).early_bird == EarlyBirdConfig(window=5, threshold=0.1)
        assert run.id.endswith(f"__{name}__L0__s0")
    assert gnn.experiment_config(grid, gnn.Run(grid.datasets[0], "gcn", "colt", 0, 0)).method.value == "colt"
    floored = gnn.experiment_config(grid, gnn.Run(grid.datasets[0], "gcn", "ugs-eb-min50", 0, 0))
    assert floored.ugs.early_bird == EarlyBirdConfig(window=5, threshold=0.1, min_epochs=50)


@pytest.mark.parametrize("method", ["ugs", "colt"])
def test_a_trajectory_takes_the_grids_weight_distribution(grid_file, tmp_path, method):
    from gnnprune.masks import kept_count

    grid = gnn.load_grid(grid_file)
    grid = gnn.Grid(**{**vars(grid), "methods": (method,), "seeds": (0,),
                       "options": (*grid.options, ("weight-distribution", "global"))})
    job = next(job for job in gnn.plan(grid) if job[0].method == method)
    assert len(job) == len(grid.levels)
    assert gnn.experiment_config(grid, job[0]).weight_distribution.value == "global"
    gnn.run_job(grid, job, tmp_path)
    for run in job:
        per_weight = json.loads((tmp_path / "runs" / f"{run.id}.json").read_text())["metrics"]["sparsity"]["per_weight"]
        total = sum(w["entries"] for w in per_weight.values())
        assert sum(w["live"] for w in per_weight.values()) == kept_count(total, grid.levels[run.level].weights)
        sparsities = [w["sparsity"] for w in per_weight.values()]
        assert max(sparsities) - min(sparsities) > 0.05, sparsities  # not every tensor at the level


@pytest.mark.parametrize("change, message", [
    ('name = "t"\nfoo = 1', "unknown keys ['foo']"),
    ('methods = ["magic"]', "unknown method 'magic'"),
    ('models = ["mlp2"]', "unknown model"),
    ('levels = [{ weights = 0.7, edges = 0.1, features = 0.2 }, { weights = 0.5, edges = 0.1, features = 0.2 }]',
     "must not decrease in weights"),
    ('levels = [{ weights = 1.5, edges = 0.1, features = 0.2 }]', "sparsity"),
])
def test_bad_grid_files_name_the_problem(tmp_path, change, message):
    key = change.split(" ", 1)[0]
    lines = [line for line in GRID.splitlines() if not line.startswith(key + " ")]
    text = "\n".join(lines).replace("[options]", change + "\n[options]", 1)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        gnn.load_grid(path)


def test_harness_runs_the_grid_skips_finished_runs_and_reports(grid_file, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert gnn.main(["--config", str(grid_file), "--out", str(out)]) == 0
    files = sorted(p.name for p in (out / "runs").glob("*.json"))
    assert len(files) == 14
    record = json.loads((out / "runs" / files[0]).read_text())
    assert record["command"].startswith("gnnprune prune --dataset")
    with open(out / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 14
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] == summary["total"] == 14
    ugs = [e for e in summary["summary"] if e["method"] == "ugs"]
    assert [e["epochs"]["mean"] for e in sorted(ugs, key=lambda e: e["level"])] == [6 * (4 + 1), 6 * (4 + 3 + 1)]  # rounds 4, then 3 more
    for e in summary["summary"]:
        if e["method"] != "dense":
            level = [(0.5, 0.1, 0.2), (0.7, 0.1, 0.4)][e["level"]]
            assert e["weight_sparsity"]["mean"] == pytest.approx(level[0], abs=0.01)  # per-layer rounding
            assert e["feature_sparsity"]["mean"] == pytest.approx(round(level[2] * 12) / 12)  # exact count of 12
    text = (out / "README.md").read_text()
    assert "| ugs | 0.7 / 0.1 / 0.4 |" in text and "14 of 14 runs finished" in text
    for name in ("accuracy_vs_weight_sparsity.png", "accuracy_vs_edge_sparsity.png", "training_cost.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"

    # a rerun trains nothing; a deleted result is the only one recomputed
    calls = []
    real = gnn.run_job
    monkeypatch.setattr(gnn, "run_job", lambda grid, job, *a: calls.append(job) or real(grid, job, *a))
    assert gnn.main(["--config", str(grid_file), "--out", str(out), "--no-plots"]) == 0
    assert calls == []
    victim = next(p for p in (out / "runs").glob("*__random__L1__s1.json"))
    victim.unlink()
    assert gnn.main(["--config", str(grid_file), "--out", str(out), "--no-plots"]) == 0
    assert [[run.id for run in job] for job in calls] == [[victim.stem]]


def test_corrupt_result_file_is_named(grid_file, tmp_path):
    out = tmp_path / "out"
    grid = gnn.load_grid(grid_file)
    run = gnn.plan(grid)[0][0]
    (out / "runs").mkdir(parents=True)
    (out / "runs" / f"{run.id}.json").write_text("{trunc")
    with pytest.raises(ValueError, match=f"{run.id}.json: corrupt result file"):
        gnn.rows(grid, out)


def test_report_names_the_producing_command():
    assert gnn._producing(["--config", "c.toml", "--out", "o", "--jobs", "2", "--report-only", "--no-plots",
                           "--only", "model=gcn"]) == \
        ["--config", "c.toml", "--out", "o"]


def test_only_filters_jobs_by_field():
    keep = gnn.select(["method=dense,cgp", "model=gcn"])
    assert keep(gnn.Run("cora", "gcn", "cgp", 0, 0)) and not keep(gnn.Run("cora", "gat", "cgp", 0, 0))
    assert not keep(gnn.Run("cora", "gcn", "ugs", 0, 0))
    keep = gnn.select(["level=1,dense", "seed=2"])
    assert keep(gnn.Run("cora", "gcn", "colt", 1, 2)) and keep(gnn.Run("cora", "gcn", "dense", None, 2))
    assert not keep(gnn.Run("cora", "gcn", "colt", 0, 2)) and not keep(gnn.Run("cora", "gcn", "colt", 1, 3))
    with pytest.raises(ValueError, match="bad --only"):
        gnn.select(["epochs=1"])


def test_only_a_level_keeps_the_ugs_trajectories_through_it(grid_file):
    jobs = gnn.chosen(gnn.plan(gnn.load_grid(grid_file)), gnn.select(["level=1", "method=ugs,cgp"]))
    assert sorted((job[0].method, len(job), job[-1].level) for job in jobs) == [("cgp", 1, 1)] * 2 + [("ugs", 2, 1)] * 2
