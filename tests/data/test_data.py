import os
from pathlib import Path

import pytest
import torch

from gnnprune.data import CSBMConfig, DataNotFoundError, csbm, data_roots, load_dataset, parse_synthetic
from gnnprune.data.paths import cache_dir, embedded_data_root, find, user_cache_dir


def test_cora_and_citeseer_public_split(cora):
    assert (cora.num_nodes, cora.edges.num_edges, cora.num_features, cora.num_classes) == (2708, 5278, 1433, 7)
    assert cora.split_sizes() == {"train": 140, "val": 500, "test": 1000}
    citeseer = load_dataset("citeseer")
    assert (citeseer.num_nodes, citeseer.num_features, citeseer.num_classes) == (3327, 3703, 6)
    assert citeseer.split_sizes() == {"train": 120, "val": 500, "test": 1000}
    assert torch.allclose(cora.x.sum(1), torch.ones(2708))  # row-normalised


def test_csbm_has_requested_size_and_homophily():
    data = csbm(CSBMConfig(num_nodes=3000, num_classes=4, avg_degree=8, homophily=0.7, seed=3))
    u, v = data.edges.edges
    assert data.num_nodes == 3000 and data.num_classes == 4
    assert abs(data.edges.num_edges - 12000) < 400  # duplicates and self-loops removed
    assert (data.y[u] == data.y[v]).float().mean() == pytest.approx(0.7, abs=0.03)
    assert data.split_sizes() == {"train": 80, "val": 500, "test": 1000}
    again = csbm(CSBMConfig(num_nodes=3000, num_classes=4, avg_degree=8, homophily=0.7, seed=3))
    assert torch.equal(again.edges.edges, data.edges.edges) and torch.equal(again.x, data.x)


def test_parse_synthetic():
    assert parse_synthetic("synthetic:num_nodes=500,homophily=0.6") == CSBMConfig(num_nodes=500, homophily=0.6)
    with pytest.raises(ValueError, match="bad synthetic option"):
        parse_synthetic("synthetic:size=5")
    with pytest.raises(ValueError, match="homophily"):
        parse_synthetic("synthetic:homophily=2")


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GNNPRUNE_DATA", str(tmp_path / "env"))
    roots = [str(p) for p in data_roots(tmp_path / "arg")]
    assert roots == [str(tmp_path / "arg"), str(tmp_path / "env"), "data", str(embedded_data_root())]
    found = tmp_path / "env" / "Planetoid" / "Cora" / "raw"
    found.mkdir(parents=True)
    (found / "probe").write_text("")
    assert find("Planetoid/Cora/raw", "probe", tmp_path / "arg") == found
    with pytest.raises(DataNotFoundError, match="tried"):
        find("Planetoid/Nope/raw", "probe", tmp_path / "arg")


def test_folder_lock_excludes_other_processes(tmp_path):
    import subprocess
    import sys

    from gnnprune.io import folder_lock

    probe = ("import fcntl, sys; h = open(sys.argv[1], 'a')\n"
             "try:\n    fcntl.flock(h, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
             "except BlockingIOError:\n    print('held')")
    lock_file = str(tmp_path / "cache" / ".lock")
    with folder_lock(tmp_path / "cache"):
        inside = subprocess.run([sys.executable, "-c", probe, lock_file], capture_output=True, text=True).stdout
    after = subprocess.run([sys.executable, "-c", probe, lock_file], capture_output=True, text=True).stdout
    assert (inside.strip(), after.strip()) == ("held", "free")


def test_concurrent_first_loads_into_a_fresh_cache_all_succeed(tmp_path, cora):
    # Three processes prepare the same empty cache at once (copy raw files, PyG processing);
    # before the lock one of them could read the other's half-written file (EOFError).
    import os
    import subprocess
    import sys

    code = ("from gnnprune.data import load_dataset; d = load_dataset('cora'); "
            "print(d.num_nodes, d.edges.num_edges, float(d.x.sum()))")
    env = {**os.environ, "GNNPRUNE_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(3)]
    outputs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outputs]
    assert {out.strip() for out, _ in outputs} == {f"2708 5278 {float(cora.x.sum())}"}


def test_embedded_copy_holds_cora_and_citeseer():
    root = embedded_data_root()
    assert root is not None
    for name in ("Cora", "CiteSeer"):
        raw = root / "Planetoid" / name / "raw"
        assert sorted(p.name.split(".", 2)[-1] for p in raw.iterdir()) == [
            "allx", "ally", "graph", "test.index", "tx", "ty", "x", "y"]


def test_cache_dir_order(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GNNPRUNE_DATA", raising=False)
    monkeypatch.delenv("GNNPRUNE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == user_cache_dir() == tmp_path / "xdg" / "gnnprune"  # no ./data here
    (tmp_path / "data").mkdir()
    assert cache_dir() == Path("data") / "cache"
    assert cache_dir(tmp_path / "root") == tmp_path / "root" / "cache"
    monkeypatch.setenv("GNNPRUNE_CACHE", str(tmp_path / "mine"))
    assert cache_dir(tmp_path / "root") == tmp_path / "mine"


def test_cache_dir_skips_a_read_only_root(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GNNPRUNE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    read_only = tmp_path / "ro"
    read_only.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != read_only and real_access(path, mode))
    assert cache_dir(read_only) == tmp_path / "xdg" / "gnnprune"
    monkeypatch.setenv("GNNPRUNE_CACHE", str(read_only / "cache"))
    with pytest.raises(PermissionError, match="GNNPRUNE_CACHE"):
        cache_dir()
