import os
from pathlib import Path

import pytest
import torch

from gnnprune.data import GraphData, load_dataset
from gnnprune.data.synthetic import CSBMConfig, csbm
from gnnprune.graph import EdgeSet

torch.set_num_threads(2)
REPO = Path(__file__).resolve().parents[1]


def tiny_graph(num_features: int = 3, seed: int = 0) -> GraphData:
    """6 nodes, 7 undirected edges, two classes; hand-built."""
    g = torch.Generator().manual_seed(seed)
    edges = torch.tensor([[0, 0, 1, 2, 3, 3, 4],
                          [1, 2, 2, 3, 4, 5, 5]])
    n = 6
    x = torch.randn(n, num_features, generator=g)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    train = torch.tensor([1, 0, 0, 1, 0, 0], dtype=torch.bool)
    val = torch.tensor([0, 1, 0, 0, 1, 0], dtype=torch.bool)
    test = torch.tensor([0, 0, 1, 0, 0, 1], dtype=torch.bool)
    return GraphData("tiny", x, EdgeSet(edges, n), y, train, val, test, num_classes=2)


@pytest.fixture
def tiny() -> GraphData:
    return tiny_graph()


@pytest.fixture(scope="session")
def small_csbm() -> GraphData:
    return csbm(CSBMConfig(num_nodes=600, num_classes=3, num_features=40, avg_degree=6, homophily=0.85,
                           signal=1.5, num_val=150, num_test=300, seed=1))


@pytest.fixture(scope="session")
def cora() -> GraphData:
    try:
        return load_dataset("cora", os.environ.get("GNNPRUNE_DATA"))
    except FileNotFoundError as exc:  # pragma: no cover - data ships beside the repo
        pytest.skip(str(exc))


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
