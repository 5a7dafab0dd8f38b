"""Helpers shared by the test modules (import as ``from helpers import ...``; pyproject puts tests/ on the path)."""
from pathlib import Path

import torch

from gnnprune.data import GraphData
from gnnprune.graph import EdgeSet

REPO = Path(__file__).resolve().parents[1]
#: The read-only data folder beside the repository (tests may use it; the library never does).
SHARED_DATA = REPO.parent / "shared" / "data"


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
