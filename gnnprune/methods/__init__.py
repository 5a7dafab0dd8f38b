"""Pruning methods. One-loop methods are hooks for :func:`gnnprune.training.train`; UGS runs rounds."""
import enum

from ..training import Method
from .base import Fitted, train_once
from .cgp import CGP, CGPConfig
from .colt import COLTRound, fit_colt, fit_colt_levels
from .dense import Dense, FixedMasks
from .jackpot import JackpotConfig, fit_jackpot
from .oneshot import OneShot, OneShotConfig
from .random import RandomMasks
from .ugs import UGSConfig, UGSRound, fit_ugs, fit_ugs_levels


class PruneMethod(str, enum.Enum):
    """The methods a run can use (``gnnprune prune --method``)."""

    DENSE = "dense"      # no pruning
    RANDOM = "random"    # random masks fixed from the start
    ONESHOT = "oneshot"  # train dense, prune by magnitude once, fine-tune
    UGS = "ugs"          # iterative lottery tickets (Chen et al., 2021)
    CGP = "cgp"          # gradual co-pruning with gradient-informed regrowth
    JACKPOT = "jackpot"  # train dense, search a mask in the frozen weights (lottery jackpots)
    COLT = "colt"        # lottery tickets intersected over two halves of the classes (COLT)

    @property
    def hooks(self) -> type[Method]:
        """The :class:`~gnnprune.training.Method` class of its training runs (UGS: of each round)."""
        return {"dense": Dense, "random": RandomMasks, "oneshot": OneShot, "ugs": UGSRound, "cgp": CGP,
                "jackpot": Dense, "colt": COLTRound}[self.value]

    @classmethod
    def default_for(cls, targets) -> "PruneMethod":
        """CGP when any target is above 0, else dense."""
        return cls.DENSE if targets.is_dense else cls.CGP


#: method names accepted by ``--method``
METHODS = tuple(method.value for method in PruneMethod)

__all__ = ["CGP", "CGPConfig", "Dense", "FixedMasks", "Fitted", "JackpotConfig", "METHODS", "Method", "OneShot",
           "OneShotConfig", "PruneMethod", "RandomMasks", "UGSConfig", "fit_colt", "fit_colt_levels", "fit_jackpot",
           "fit_ugs", "fit_ugs_levels", "train_once"]
