"""The dense baseline: no masks change."""
from __future__ import annotations

from ..training import Method


class Dense(Method):
    """Train the full model on the full graph (plain supervised unless asked otherwise)."""

    name = "dense"


class FixedMasks(Dense):
    """Train with whatever masks the pruner already holds (a lottery ticket's final run)."""

    name = "fixed"
