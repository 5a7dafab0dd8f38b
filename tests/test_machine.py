import json
import os
import platform
import subprocess
import sys

import pytest

from gnnprune import machine
from gnnprune.machine import HUGEPAGE_TUNABLE, MALLOC_VARIABLE, MallocMode, hugepage_environment, load_note, malloc_mode

SMALL_RUN = ["prune", "--dataset", "synthetic:num_nodes=300,num_classes=3,num_features=16,num_val=60,num_test=100",
             "--epochs", "3", "--seed", "0", "--no-progress", "--threads", "1"]


def test_malloc_mode_defaults_to_hugepages_and_names_the_choices_when_wrong():
    assert malloc_mode({}) is MallocMode.HUGEPAGES
    assert malloc_mode({MALLOC_VARIABLE: "retain"}) is MallocMode.RETAIN
    with pytest.raises(ValueError, match="'bogus' is not one of: hugepages, retain, system"):
        malloc_mode({MALLOC_VARIABLE: "bogus"})


def test_hugepage_environment_adds_the_tunable_once(monkeypatch):
    monkeypatch.setattr(machine, "_glibc_at_least", lambda major, minor: True)
    monkeypatch.setattr(machine, "_transparent_hugepages", lambda: "madvise")
    assert hugepage_environment({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": HUGEPAGE_TUNABLE}
    other = "glibc.malloc.arena_max=2"
    assert hugepage_environment({"GLIBC_TUNABLES": other})["GLIBC_TUNABLES"] == f"{other}:{HUGEPAGE_TUNABLE}"
    assert hugepage_environment({"GLIBC_TUNABLES": HUGEPAGE_TUNABLE}) is None  # no second re-exec
    assert hugepage_environment({MALLOC_VARIABLE: "system"}) is None
    assert hugepage_environment({MALLOC_VARIABLE: "retain"}) is None
    monkeypatch.setattr(machine, "_transparent_hugepages", lambda: "never")
    assert hugepage_environment({}) is None
    monkeypatch.setattr(machine, "_transparent_hugepages", lambda: "always")
    monkeypatch.setattr(machine, "_glibc_at_least", lambda major, minor: False)
    assert hugepage_environment({}) is None


@pytest.mark.parametrize("system, libc, version, expected", [
    ("Linux", ("glibc", "2.35"), (2, 35), True), ("Linux", ("glibc", "2.34"), (2, 34), False),
    ("Linux", ("glibc", "2.x"), (), False), ("Linux", ("", ""), None, False), ("Darwin", ("glibc", "2.40"), None, False)])
def test_glibc_version_is_read_once_for_both_malloc_modes(monkeypatch, system, libc, version, expected):
    monkeypatch.setattr(platform, "system", lambda: system)
    monkeypatch.setattr(platform, "libc_ver", lambda: libc)
    assert machine._glibc_version() == version
    assert machine._glibc_at_least(2, 35) is expected
    if version is None:  # retain mode gives up before touching malloc
        assert machine.retain_freed_memory() == "system default malloc (not glibc)"


def _cli(tmp_path, mode: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env[MALLOC_VARIABLE] = mode
    return subprocess.run([sys.executable, "-m", "gnnprune", *SMALL_RUN, "--out", str(tmp_path / mode)],
                          capture_output=True, text=True, env=env)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
@pytest.mark.parametrize("mode", ["system", "retain", "hugepages"])
def test_the_command_records_the_malloc_it_ran_with(tmp_path, mode):
    if mode == "hugepages" and hugepage_environment({}) is None:
        pytest.skip("no glibc >= 2.35 with transparent huge pages here")
    proc = _cli(tmp_path, mode)
    assert proc.returncode == 0, proc.stderr
    note = json.loads((tmp_path / mode / "seed-0" / "metrics.json").read_text())["malloc"]
    expected = {"system": "system default malloc", "retain": "glibc malloc, freed memory retained",
                "hugepages": f"glibc malloc, transparent huge pages ({HUGEPAGE_TUNABLE}"}[mode]
    assert note.startswith(expected)


def test_the_command_refuses_an_unknown_malloc_mode(tmp_path):
    proc = _cli(tmp_path, "bogus")
    assert proc.returncode == 2
    assert "GNNPRUNE_MALLOC='bogus' is not one of: hugepages, retain, system" in proc.stderr
    assert not (tmp_path / "bogus").exists()


def test_load_note_names_the_load_and_cores_or_nothing():
    assert load_note(1.234).startswith("1-minute load average 1.23 at start on ")
    assert load_note(float("nan")) == "" and load_note(None) == ""
