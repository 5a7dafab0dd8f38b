"""One-shot magnitude pruning: train dense, prune once to the targets, fine-tune."""
from __future__ import annotations

from dataclasses import dataclass

from ..copruning import EdgeRanking, FeatureScore, PruneTargets
from ..masks import EarlyBird, EarlyBirdConfig
from .dense import Dense


@dataclass(frozen=True)
class OneShotConfig:
    """Attributes:
        finetune_epochs: epochs trained after the cut (default: as many as the dense phase).
        early_bird: end the dense phase early once the masks the cut would pick have settled
            (:class:`~gnnprune.masks.EarlyBirdConfig`); ``None``: always train the full dense phase.
    """

    finetune_epochs: int | None = None
    early_bird: EarlyBirdConfig | None = None

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

    With ``early_bird``, after every dense epoch :class:`~gnnprune.masks.EarlyBird` observes the
    masks the cut would pick then (:meth:`~gnnprune.copruning.CoPruner.would_pick`); when it fires
    after epoch ``e``, the cut happens at epoch ``e + 1`` instead, and the run still fine-tunes
    ``epochs - prune_epoch`` epochs after it, so it ends ``prune_epoch - e - 1`` epochs sooner.

    Args:
        targets: final sparsity of each part.
        prune_epoch: the epoch the cut happens (the dense phase's length) without an early bird.
        early_bird: the monitor's settings (``None``: no monitor).
    """

    name = "oneshot"

    def __init__(self, targets: PruneTargets, prune_epoch: int, early_bird: EarlyBirdConfig | None = None) -> None:
        if prune_epoch < 0:
            raise ValueError(f"prune_epoch must be >= 0, got {prune_epoch}")
        self.targets = targets
        self.prune_epoch = prune_epoch
        self.monitor = None if early_bird is None else EarlyBird(early_bird)
        self.cut_epoch = prune_epoch
        self.finetune_epochs = 0

    def on_start(self, run) -> None:
        if self.prune_epoch >= run.config.epochs:
            raise ValueError(f"prune_epoch ({self.prune_epoch}) must be < epochs ({run.config.epochs})")
        self.finetune_epochs = run.config.epochs - self.prune_epoch

    def on_epoch_start(self, run, epoch: int) -> None:
        if self.monitor is not None and 0 < epoch < self.prune_epoch and not self.monitor.fired:
            masks = run.pruner.would_pick(self.targets, edge_ranking=EdgeRanking.GLOBAL,
                                          feature_score=FeatureScore.MAGNITUDE)
            if self.monitor.observe(epoch - 1, masks):
                self.cut_epoch = epoch
        if epoch == self.cut_epoch:
            report = run.pruner.update(self.targets, optimizer=run.optimizer, edge_ranking=EdgeRanking.GLOBAL,
                                       feature_score=FeatureScore.MAGNITUDE)
            entry = {"epoch": epoch, "targets": vars(self.targets), "sites": report}
            if self.monitor is not None:
                entry["early_bird"] = self.monitor.record(self.prune_epoch)
            run.log.append(entry)

    def selectable(self, epoch: int) -> bool:
        return epoch >= self.cut_epoch

    def finished(self, run, epoch: int) -> bool:
        return epoch >= self.cut_epoch + self.finetune_epochs - 1

    def state_dict(self) -> dict:
        if self.monitor is None:
            return {}
        return {"cut_epoch": self.cut_epoch, "early_bird": self.monitor.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.monitor is not None:
            self.cut_epoch = state["cut_epoch"]
            self.monitor.load_state_dict(state["early_bird"])
