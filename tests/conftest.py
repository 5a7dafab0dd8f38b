import os

import pytest
import torch

from gnnprune.data import GraphData, load_dataset
from gnnprune.data.synthetic import CSBMConfig, csbm
from helpers import tiny_graph

torch.set_num_threads(2)


@pytest.fixture
def tiny() -> GraphData:
    return tiny_graph()


@pytest.fixture(scope="session")
def small_csbm() -> GraphData:
    return csbm(CSBMConfig(num_nodes=600, num_classes=3, num_features=40, avg_degree=6, homophily=0.85,
                           signal=1.5, num_val=150, num_test=300, seed=1))


@pytest.fixture(scope="session")
def cora() -> GraphData:
    return load_dataset("cora", os.environ.get("GNNPRUNE_DATA"))


def pytest_terminal_summary(terminalreporter):
    """Say how many cases of the CLI's bad-input table (tests/test_cli.py::test_bad_input) ran."""
    outcomes = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        ids = {r.nodeid for r in terminalreporter.stats.get(outcome, [])
               if getattr(r, "nodeid", "").startswith("tests/test_cli.py::test_bad_input[")}
        if ids:
            outcomes[outcome] = len(ids)
    if outcomes:
        detail = ", ".join(f"{n} {outcome}" for outcome, n in outcomes.items())
        terminalreporter.write_line(f"bad-input table: {sum(outcomes.values())} cases tried ({detail})")
