"""Analytic multiply-accumulate counts from shapes and masks (no profiler)."""
from __future__ import annotations


def transform_macs(kept_weights: int, num_nodes: int) -> int:
    """``X W`` with ``kept_weights`` non-zero weights applied to ``num_nodes`` rows."""
    return int(kept_weights) * int(num_nodes)


def aggregation_macs(num_entries: int, width: int) -> int:
    """Sparse ``A X``: one MAC per stored operator entry and feature channel."""
    return int(num_entries) * int(width)


def gcn_operator_entries(kept_edges: int, num_nodes: int) -> int:
    """Stored entries of the normalised adjacency: both directions of each kept edge + self-loops."""
    return 2 * int(kept_edges) + int(num_nodes)
