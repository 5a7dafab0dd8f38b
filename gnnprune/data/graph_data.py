"""The one container every loader returns."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..graph import EdgeSet


@dataclass
class GraphData:
    """A node-classification data set, framework-neutral.

    Attributes:
        name: data set name (e.g. ``"cora"``).
        x: ``[N, F]`` float node features.
        edges: undirected edges, stored once per pair.
        y: ``[N]`` long labels (``task="multiclass"``) or ``[N, T]`` float 0/1 targets
            (``task="multilabel"``, e.g. ogbn-proteins' 112 binary tasks).
        train_mask, val_mask, test_mask: ``[N]`` bool split.
        num_classes: number of model outputs: classes, or tasks of a multi-label data set.
        metric: name of the evaluation metric (``"accuracy"``, or ``"ogb:<name>"`` for the OGB
            Evaluator; see :func:`gnnprune.metrics.get_evaluator`).
        info: provenance (source path, split description) recorded in metrics.json.
        task: ``"multiclass"`` (softmax + cross-entropy) or ``"multilabel"`` (sigmoid + binary
            cross-entropy per task); chooses :attr:`loss`.
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
    task: str = "multiclass"

    def __post_init__(self) -> None:
        if self.task not in TASK_LOSSES:
            raise ValueError(f"{self.name}: unknown task {self.task!r}; choose from {', '.join(TASK_LOSSES)}")
        if self.task == "multilabel" and (self.y.dim() != 2 or self.y.size(1) != self.num_classes):
            raise ValueError(f"{self.name}: multi-label y must be [N, {self.num_classes}], got {tuple(self.y.shape)}")
        if self.task == "multilabel" and self.metric == "accuracy":
            raise ValueError(f"{self.name}: a multi-label task needs a score metric (rocauc or ogb:<name>), not accuracy")
        n = self.x.size(0)
        if self.edges.num_nodes != n:
            raise ValueError(f"{self.name}: edges are over {self.edges.num_nodes} nodes, features over {n}")
        for field_name in ("y", "train_mask", "val_mask", "test_mask"):
            if getattr(self, field_name).size(0) != n:
                raise ValueError(f"{self.name}: {field_name} has {getattr(self, field_name).size(0)} rows, expected {n}")

    @property
    def loss(self) -> Callable[[Tensor, Tensor], Tensor]:
        """``loss(logits, target)`` of this data set's task (see :data:`TASK_LOSSES`)."""
        return TASK_LOSSES[self.task]

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
                "task": self.task, "split_sizes": self.split_sizes(), **self.info}


def multilabel_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Mean binary cross-entropy over nodes and tasks, :math:`-[t \\log\\sigma(z) + (1-t)\\log(1-\\sigma(z))]`."""
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))


#: loss of each task type: ``loss(logits [n, C], target [n] or [n, C]) -> scalar``
TASK_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "multiclass": F.cross_entropy,
    "multilabel": multilabel_loss,
}


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
