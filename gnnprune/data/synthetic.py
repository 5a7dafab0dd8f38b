"""Contextual stochastic block model (CSBM) graphs: labels, homophily and signal you control."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..graph import EdgeSet
from .graph_data import GraphData, per_class_split


@dataclass(frozen=True)
class CSBMConfig:
    """Parameters of a contextual SBM graph.

    Attributes:
        num_nodes: nodes.
        num_classes: classes (balanced).
        num_features: feature dimension.
        avg_degree: expected degree.
        num_edges: if > 0, exactly this many undirected edges (overrides ``avg_degree``).
        homophily: probability that an edge joins two nodes of the same class.
        signal: distance of the class means in units of the noise std (feature informativeness).
        train_per_class, num_val, num_test: Planetoid-style split.
        seed: generator seed.
    """

    num_nodes: int = 2000
    num_classes: int = 5
    num_features: int = 64
    avg_degree: float = 4.0
    num_edges: int = 0
    homophily: float = 0.8
    signal: float = 1.0
    train_per_class: int = 20
    num_val: int = 500
    num_test: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_nodes < 2 or self.num_classes < 2 or self.num_features < 1:
            raise ValueError("a CSBM needs >= 2 nodes, >= 2 classes and >= 1 feature")
        if not 0.0 <= self.homophily <= 1.0:
            raise ValueError(f"homophily must be in [0, 1], got {self.homophily}")
        if self.avg_degree <= 0:
            raise ValueError(f"avg_degree must be > 0, got {self.avg_degree}")
        if not 0 <= self.num_edges <= self.num_nodes * (self.num_nodes - 1) // 4:
            raise ValueError(f"num_edges must be in [0, n(n-1)/4] for a sparse graph, got {self.num_edges}")


def csbm(config: CSBMConfig = CSBMConfig()) -> GraphData:
    """Generate a CSBM graph.

    Each edge picks a uniform source node, then a target from the source's class with
    probability ``homophily`` and from another class otherwise. Features are
    ``mu_{y} + noise`` with class means at distance ``signal`` (noise std 1).
    """
    g = torch.Generator().manual_seed(config.seed)
    n, c = config.num_nodes, config.num_classes
    y = torch.randint(0, c, (n,), generator=g)
    by_class = [torch.nonzero(y == k).view(-1) for k in range(c)]
    exact = config.num_edges > 0
    m = int(config.num_edges * 1.02) + 16 if exact else int(round(config.avg_degree * n / 2))
    src = torch.randint(0, n, (m,), generator=g)
    same = torch.rand(m, generator=g) < config.homophily
    shift = torch.randint(1, c, (m,), generator=g)
    target_class = torch.where(same, y[src], (y[src] + shift) % c)
    dst = torch.empty(m, dtype=torch.long)
    for k in range(c):
        pick = target_class == k
        if by_class[k].numel() == 0:
            dst[pick] = src[pick]
            continue
        dst[pick] = by_class[k][torch.randint(0, by_class[k].numel(), (int(pick.sum()),), generator=g)]
    edges = EdgeSet.from_edge_index(torch.stack([src, dst]), n)
    if exact:
        if edges.num_edges < config.num_edges:
            raise ValueError(f"could not draw {config.num_edges} distinct edges on {n} nodes")
        chosen = torch.randperm(edges.num_edges, generator=g)[:config.num_edges].sort().values
        edges = EdgeSet(edges.edges[:, chosen], n)
    means = torch.randn(c, config.num_features, generator=g)
    means = means / means.norm(dim=1, keepdim=True) * (config.signal / 2 ** 0.5)
    x = means[y] + torch.randn(n, config.num_features, generator=g)
    train, val, test = per_class_split(y, c, config.train_per_class, config.num_val, config.num_test, g)
    return GraphData(
        name="csbm", x=x, edges=edges, y=y,
        train_mask=train, val_mask=val, test_mask=test, num_classes=c,
        info={"generator": "csbm", **{k: getattr(config, k) for k in config.__dataclass_fields__}},
    )
