"""One-shot magnitude pruning: train dense, prune once to the targets, fine-tune."""
from __future__ import annotations

from dataclasses import dataclass

from ..copruning import EdgeRanking, FeatureScore, PruneTargets
from .dense import Dense


@dataclass(frozen=True)
class OneShotConfig:
    """Attributes:
        finetune_epochs: epochs trained after the cut (default: as many as the dense phase).
    """

    finetune_epochs: int | None = None

    def __post_init__(self) -> None:
        if self.finetune_epochs is not None and self.finetune_epochs < 1:
            raise ValueError(f"finetune_epochs must be >= 1, got {self.finetune_epochs}")


class OneShot(Dense):
    """Prune every part once, at epoch ``prune_epoch``, by magnitude; train on after.

    Before the cut the model trains dense with learned edge weights and feature gates (so that
    edges and features have a magnitude); the cut keeps the largest weights of each layer, the
    edges with the largest learned weight and the features with the largest
    ``|gate| * ||weight row||``, each compared over the whole model or graph. Only epochs after
    the cut may be selected.

    Args:
        targets: final sparsity of each part.
        prune_epoch: the epoch the cut happens (the dense phase's length).
    """

    name = "oneshot"

    def __init__(self, targets: PruneTargets, prune_epoch: int) -> None:
        if prune_epoch < 0:
            raise ValueError(f"prune_epoch must be >= 0, got {prune_epoch}")
        self.targets = targets
        self.prune_epoch = prune_epoch

    def on_start(self, run) -> None:
        if self.prune_epoch >= run.config.epochs:
            raise ValueError(f"prune_epoch ({self.prune_epoch}) must be < epochs ({run.config.epochs})")

    def on_epoch_start(self, run, epoch: int) -> None:
        if epoch == self.prune_epoch:
            report = run.pruner.update(self.targets, optimizer=run.optimizer, edge_ranking=EdgeRanking.GLOBAL,
                                       feature_score=FeatureScore.MAGNITUDE)
            run.log.append({"epoch": epoch, "targets": vars(self.targets), "sites": report})

    def selectable(self, epoch: int) -> bool:
        return epoch >= self.prune_epoch
