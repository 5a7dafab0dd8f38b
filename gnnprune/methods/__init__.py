"""Pruning methods. One-loop methods are hooks for :func:`gnnprune.training.train`; UGS runs rounds."""
from .base import Fitted, train_once
from .cgp import CGP, CGPConfig
from .dense import Dense, FixedMasks
from .oneshot import OneShot, OneShotConfig
from .random import RandomMasks
from .ugs import UGSConfig, fit_ugs, fit_ugs_levels

#: method names accepted by ``--method``
METHODS = ("dense", "random", "oneshot", "ugs", "cgp")

__all__ = ["CGP", "CGPConfig", "Dense", "FixedMasks", "Fitted", "METHODS", "OneShot", "OneShotConfig",
           "RandomMasks", "UGSConfig", "fit_ugs", "fit_ugs_levels", "train_once"]
