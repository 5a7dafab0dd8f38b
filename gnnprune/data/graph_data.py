"""The one container every loader returns."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..graph import EdgeSet


@dataclass
class GraphData:
    """A node-classification data set, framework-neutral.

    Attributes:
        name: data set name (e.g. ``"cora"``).
        x: ``[N, F]`` float node features.
        edges: undirected edges, stored once per pair.
        y: ``[N]`` long labels.
        train_mask, val_mask, test_mask: ``[N]`` bool split.
        num_classes: number of classes.
        metric: name of the evaluation metric (``"accuracy"``).
        info: provenance (source path, split description) recorded in metrics.json.
    """

    name: str
    x: Tensor
    edges: EdgeSet
    y: Tensor
    train_mask: Tensor
    val_mask: Tensor
    test_mask: Tensor
    num_classes: int
    metric: str = "accuracy"
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.x.size(0)
        if self.edges.num_nodes != n:
            raise ValueError(f"{self.name}: edges are over {self.edges.num_nodes} nodes, features over {n}")
        for field_name in ("y", "train_mask", "val_mask", "test_mask"):
            if getattr(self, field_name).size(0) != n:
                raise ValueError(f"{self.name}: {field_name} has {getattr(self, field_name).size(0)} rows, expected {n}")

    @property
    def num_nodes(self) -> int:
        return int(self.x.size(0))

    @property
    def num_features(self) -> int:
        return int(self.x.size(1))

    def split_sizes(self) -> dict[str, int]:
        return {k: int(getattr(self, f"{k}_mask").sum()) for k in ("train", "val", "test")}

    def describe(self) -> dict:
        return {"name": self.name, "nodes": self.num_nodes, "undirected_edges": self.edges.num_edges,
                "features": self.num_features, "classes": self.num_classes, "metric": self.metric,
                "split_sizes": self.split_sizes(), **self.info}


def per_class_split(y: Tensor, num_classes: int, train_per_class: int, num_val: int, num_test: int,
                    generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Planetoid-style split: ``train_per_class`` nodes of each class, then val and test at random."""
    n = y.numel()
    perm = torch.randperm(n, generator=generator)
    train = torch.zeros(n, dtype=torch.bool)
    for c in range(num_classes):
        members = perm[y[perm] == c][:train_per_class]
        train[members] = True
    rest = perm[~train[perm]]
    if rest.numel() < num_val + num_test:
        raise ValueError(f"{n} nodes cannot hold {int(train.sum())} train + {num_val} val + {num_test} test")
    val = torch.zeros(n, dtype=torch.bool)
    test = torch.zeros(n, dtype=torch.bool)
    val[rest[:num_val]] = True
    test[rest[num_val:num_val + num_test]] = True
    return train, val, test
