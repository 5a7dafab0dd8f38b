"""Pruning methods: hooks for :func:`gnnprune.training.train`."""
from .cgp import CGP, CGPConfig
from .dense import Dense

METHODS = ("dense", "cgp")

__all__ = ["CGP", "CGPConfig", "Dense", "METHODS"]
