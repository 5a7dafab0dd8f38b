"""Contextual stochastic block model (CSBM) graphs: labels, homophily and signal you control."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

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
        degree_skew: Zipf exponent :math:`s` of the expected degrees: node ``i`` of random rank
            :math:`r_i` draws edges with weight :math:`(r_i + 1)^{-s}` (Chung-Lu style), giving a
            heavy-tailed degree distribution; 0 draws nodes uniformly (Poisson degrees).
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
    degree_skew: float = 0.0
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
        if not 0.0 <= self.degree_skew < 2.0:
            raise ValueError(f"degree_skew must be in [0, 2), got {self.degree_skew}")


#: CSBM graphs of the sizes of real data sets (``synthetic:arxiv``, ``synthetic:products``)
PRESETS: dict[str, CSBMConfig] = {
    "arxiv": CSBMConfig(num_nodes=169_343, num_edges=1_166_243, num_features=128, num_classes=40,
                        homophily=0.65, signal=1.0, degree_skew=0.6, train_per_class=500,
                        num_val=20_000, num_test=40_000),
    "products": CSBMConfig(num_nodes=2_449_029, num_edges=61_859_140, num_features=100, num_classes=47,
                           homophily=0.8, signal=1.0, degree_skew=0.6, train_per_class=1_000,
                           num_val=40_000, num_test=200_000),
}


def csbm(config: CSBMConfig = CSBMConfig()) -> GraphData:
    """Generate a CSBM graph.

    Each edge picks a source node, then a target from the source's class with probability
    ``homophily`` and from another class otherwise; with ``degree_skew`` > 0 both are drawn
    in proportion to a Zipf weight per node instead of uniformly. Features are
    ``mu_{y} + noise`` with class means at distance ``signal`` (noise std 1).
    """
    g = torch.Generator().manual_seed(config.seed)
    n, c = config.num_nodes, config.num_classes
    y = torch.randint(0, c, (n,), generator=g)
    exact = config.num_edges > 0
    oversample = 1.02 if config.degree_skew == 0 else 1.12  # duplicates among hubs
    m = int(config.num_edges * oversample) + 16 if exact else int(round(config.avg_degree * n / 2))
    draw = _uniform_endpoints if config.degree_skew == 0 else _weighted_endpoints
    src, dst = draw(y, c, m, config.homophily, config.degree_skew, g)
    edges = EdgeSet.from_edge_index(torch.stack([src, dst]), n)
    del src, dst
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


def _target_classes(y_src: Tensor, c: int, homophily: float, g: torch.Generator) -> Tensor:
    same = torch.rand(y_src.numel(), generator=g) < homophily
    shift = torch.randint(1, c, (y_src.numel(),), generator=g)
    return torch.where(same, y_src, (y_src + shift) % c)


def _uniform_endpoints(y: Tensor, c: int, m: int, homophily: float, skew: float,
                       g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Uniform sources, uniform targets within the chosen class."""
    n = y.numel()
    by_class = [torch.nonzero(y == k).view(-1) for k in range(c)]
    src = torch.randint(0, n, (m,), generator=g)
    target_class = _target_classes(y[src], c, homophily, g)
    dst = torch.empty(m, dtype=torch.long)
    for k in range(c):
        pick = target_class == k
        if by_class[k].numel() == 0:
            dst[pick] = src[pick]
            continue
        dst[pick] = by_class[k][torch.randint(0, by_class[k].numel(), (int(pick.sum()),), generator=g)]
    return src, dst


def _weighted_endpoints(y: Tensor, c: int, m: int, homophily: float, skew: float,
                        g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Sources and targets (within the chosen class) drawn with probability :math:`\\propto (r_i+1)^{-s}`.

    Inverse-CDF sampling over nodes sorted by class: one ``searchsorted`` per endpoint, no
    per-class loop, int32 endpoints.
    """
    n = y.numel()
    rank = torch.randperm(n, generator=g)
    weight = (rank.double() + 1).pow(-skew)
    del rank
    cdf = weight.cumsum(0)
    src = torch.searchsorted(cdf, torch.rand(m, generator=g, dtype=torch.float64) * cdf[-1], right=True,
                             out_int32=True).clamp_(max=n - 1)
    target_class = _target_classes(y[src], c, homophily, g)
    order = torch.argsort(y, stable=True)
    class_cdf = weight[order].cumsum(0)
    del weight
    ends = torch.bincount(y, minlength=c).cumsum(0)
    starts = ends - torch.bincount(y, minlength=c)
    low = torch.where(starts > 0, class_cdf[(starts - 1).clamp(min=0)], torch.zeros((), dtype=torch.float64))
    high = class_cdf[(ends - 1).clamp(min=0)]
    u = torch.rand(m, generator=g, dtype=torch.float64)
    u = low[target_class] + u * (high - low)[target_class]
    pos = torch.searchsorted(class_cdf, u, right=True, out_int32=True)
    del u
    pos = torch.minimum(torch.maximum(pos, starts.int()[target_class]), (ends.int() - 1)[target_class])
    dst = order.int()[pos.long()]
    empty = (ends - starts)[target_class] == 0
    dst[empty] = src[empty]  # no node of that class: a self-loop, dropped later
    return src, dst
