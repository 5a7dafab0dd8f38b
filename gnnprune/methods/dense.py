"""The dense baseline: no masks change."""
from __future__ import annotations


class Dense:
    """Train the full model on the full graph."""

    name = "dense"

    def on_start(self, run) -> None:
        pass

    def on_epoch_start(self, run, epoch: int) -> None:
        pass

    def selectable(self, epoch: int) -> bool:
        return True

    def on_finish(self, run) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class FixedMasks(Dense):
    """Train with whatever masks the pruner already holds (a lottery ticket's final run)."""

    name = "fixed"
