r"""COLT for CNNs: lottery tickets of two copies trained on disjoint halves of the classes
(reference code ismail31416/COLT), on element masks of the shared engine.

Every ``Conv2d`` / ``Linear`` weight is an element site (:func:`~cnn_bridge.adapters.register_weight_site`).
Two copies of one initialisation train on the images of the first ``C // 2`` classes and of the
rest, each with its own head (the output rows of its classes in the classifier). Each round,
at level :math:`s_r = \min(s, 1 - (1 - s_{r-1})(1 - \text{rate}))`:

1. both copies are rewound to the initial weights under the current masks and trained;
2. each keeps, per weight, the :math:`n_r` = ``kept_count(numel, s_r)`` live entries of largest
   :math:`|w|` (ties: lower index);
3. the new mask keeps the intersection and tops it up to exactly :math:`n_r` with the copies'
   largest mean :math:`|w|` (recorded per round); the classifier's rows are not intersected:
   a row is ranked by the copy owning its class.

The ticket, the initial weights under the final masks, then trains on all classes. The same
loop with one copy on all classes (:func:`imp_ticket`) is iterative magnitude pruning (the
lottery-ticket baseline COLT is compared with).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gnnprune.masks import MaskEngine, SiteKind, highest, kept_count

from .adapters import MASKABLE, WeightMasks, register_weight_site
from .data import ImageData
from .train import CNNTrainConfig, evaluate_cnn, train_cnn


@dataclass(frozen=True)
class TicketRounds:
    """Attributes:
        sparsity: final fraction of every conv / linear weight removed, in ``[0, 1)``.
        rate: fraction of the remaining entries each round removes, in ``(0, 1)``.
        round_train: training of each copy in every round.
        ticket_train: training of the final ticket (all classes).
    """

    sparsity: float
    rate: float = 0.2
    round_train: CNNTrainConfig = CNNTrainConfig(epochs=2)
    ticket_train: CNNTrainConfig = CNNTrainConfig(epochs=2)

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if not 0.0 < self.rate < 1.0:
            raise ValueError(f"rate must be in (0, 1), got {self.rate}")

    def levels(self) -> list[float]:
        """The sparsity reached after each round (the last is exactly ``sparsity``)."""
        levels, current = [], 0.0
        while current < self.sparsity:
            current = min(self.sparsity, 1 - (1 - current) * (1 - self.rate))
            if self.sparsity - current < 1e-12:
                current = self.sparsity
            levels.append(current)
        return levels


class LogitSubset(nn.Module):
    """``model`` with the logits of ``classes`` only: ``[B, len(classes)]``."""

    def __init__(self, model: nn.Module, classes: Tensor) -> None:
        super().__init__()
        self.inner = model
        self.classes = classes.clone()

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x).index_select(1, self.classes)


def image_class_halves(num_classes: int) -> tuple[Tensor, Tensor]:
    """The classes ``0 .. C // 2 - 1`` and ``C // 2 .. C - 1``."""
    if num_classes < 2:
        raise ValueError(f"colt needs >= 2 classes to split, got {num_classes}")
    classes = torch.arange(num_classes)
    return classes[: num_classes // 2], classes[num_classes // 2:]


def images_of_classes(data: ImageData, classes: Tensor) -> ImageData:
    """The train and test images of ``classes``, labels renumbered ``0 .. len(classes) - 1``."""
    relabel = torch.full((data.num_classes,), -1, dtype=torch.long)
    relabel[classes] = torch.arange(classes.numel())
    train, test = torch.isin(data.train_y, classes), torch.isin(data.test_y, classes)
    return ImageData(data.train_x[train], relabel[data.train_y[train]], data.test_x[test], relabel[data.test_y[test]],
                     data.mean, data.std, int(classes.numel()), f"{data.name} classes {classes.tolist()}")


def element_engine(model: nn.Module) -> MaskEngine:
    """An element site (all live) over every ``Conv2d`` / ``Linear`` weight of ``model``."""
    engine = MaskEngine()
    for name, module in model.named_modules():
        if isinstance(module, MASKABLE):
            register_weight_site(engine, model, name, SiteKind.WEIGHT)
    return engine


def classifier_name(model: nn.Module, num_classes: int) -> str:
    """The last ``Linear`` with ``num_classes`` outputs: the head."""
    heads = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not heads:
        raise ValueError(f"{type(model).__name__} has no Linear layer with {num_classes} outputs")
    return heads[-1]


def rewind_masked(model: nn.Module, initial: dict, engine: MaskEngine) -> WeightMasks:
    """Load ``initial`` into ``model`` and zero its dead weights; returns the applied masks."""
    model.load_state_dict(initial)
    masks = WeightMasks(engine, model)
    masks.apply()
    return masks


def colt_ticket(build: Callable[[], nn.Module], data: ImageData, rounds: TicketRounds, seed: int = 0,
                progress: bool = True) -> dict:
    """COLT to ``rounds.sparsity``; returns the record (per round: each copy's accuracy on its
    classes' test images, the intersection and top-up per weight; the ticket's test accuracy,
    epochs trained, the masks' state in ``engine``)."""
    return _ticket_rounds(build, data, rounds, image_class_halves(data.num_classes), seed, progress)


def imp_ticket(build: Callable[[], nn.Module], data: ImageData, rounds: TicketRounds, seed: int = 0,
               progress: bool = True) -> dict:
    """Iterative magnitude pruning with rewinding on the same rounds: one copy, all classes."""
    return _ticket_rounds(build, data, rounds, (torch.arange(data.num_classes),), seed, progress)


def _ticket_rounds(build, data, rounds: TicketRounds, halves, seed, progress) -> dict:
    torch.manual_seed(seed)
    model = build()
    initial = copy.deepcopy(model.state_dict())
    engine = element_engine(model)
    head = classifier_name(model, data.num_classes) + ".weight"
    owner = torch.zeros(data.num_classes, dtype=torch.long)
    for index, classes in enumerate(halves):
        owner[classes] = index
    record = {"halves": [h.tolist() for h in halves], "rounds": [], "epochs": 0}
    for level in rounds.levels():
        scores, entries = [], []
        for index, classes in enumerate(halves):
            masks = rewind_masked(model, initial, engine)
            view = model if len(halves) == 1 else LogitSubset(model, classes)
            half = data if len(halves) == 1 else images_of_classes(data, classes)
            result = train_cnn(view, half, rounds.round_train, masks, progress=progress,
                               description=f"round {len(record['rounds'])} copy {index}")
            record["epochs"] += result["epochs_run"]
            scores.append({site.name: _weight(model, site.name).detach().abs().clone() for site in engine})
            entries.append({"classes": classes.tolist(), "test_accuracy": result["test_accuracy"]})
        record["rounds"].append({"level": level, "copies": entries,
                                 "sites": _merge(engine, scores, level, head, owner)})
    masks = rewind_masked(model, initial, engine)
    final = train_cnn(model, data, rounds.ticket_train, masks, progress=progress, description="ticket")
    record["epochs"] += final["epochs_run"]
    record.update(test_accuracy=evaluate_cnn(model, data.test_x, data.test_y, data.mean, data.std),
                  ticket=final, kept=masks.kept(), total=masks.total(), engine=engine.state_dict())
    return record


def _weight(model: nn.Module, site: str) -> Tensor:
    return model.get_submodule(site.rpartition(".")[0]).weight


def _merge(engine: MaskEngine, scores: list[dict[str, Tensor]], level: float, head: str, owner: Tensor) -> dict:
    """Set every site to the copies' intersection topped up to its exact count at ``level``;
    returns per site the counts (start, intersection, kept, topped up)."""
    report = {}
    for site in engine:
        live = site.mask.clone()
        target = kept_count(site.numel, level)
        stacked = torch.stack([s[site.name] for s in scores])
        if site.name == head and stacked.size(0) > 1:  # rows belong to the copy owning their class
            merged = stacked.gather(0, owner.view(1, -1, 1).expand(1, *stacked.shape[1:])).squeeze(0)
            both = None
        else:
            keeps = [_keep(s, live, target) for s in stacked]
            both = torch.stack(keeps).all(0)
            merged = torch.where(both, torch.tensor(float("inf")), stacked.mean(0))
        keep = _keep(merged, live, target)
        engine.set_mask(site.name, keep)
        inter = int(keep.sum()) if both is None else int(both.sum())
        report[site.name] = {"start": int(live.sum()), "intersection": inter, "kept": int(keep.sum()),
                             "topped_up": 0 if both is None else int((keep & ~both).sum())}
    return report


def _keep(scores: Tensor, live: Tensor, count: int) -> Tensor:
    """Bool mask of the ``count`` live entries of largest score (ties: lower index)."""
    keep = torch.zeros(live.numel(), dtype=torch.bool)
    keep[highest(scores, live, count)] = True
    return keep.view(live.shape)
