r"""Random regular graphs and their average shortest path length (ASPL).

Graphs are dense symmetric boolean adjacency matrices ``[n, n]`` with an empty diagonal
(n is at most a few hundred channel groups here). The ASPL of a connected graph is

.. math::
    \mathrm{ASPL}(G) = \frac{1}{n (n - 1)} \sum_{u \ne v} d(u, v),

computed for all pairs at once by a breadth-first search on the matrix: the set reached in
``t + 1`` steps is the set reached in ``t`` steps plus its neighbours (one boolean matmul).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_SWAPS = 1000  # double-edge swap proposals per graph


def check_regular(n: int, k: int) -> None:
    """``ValueError`` unless a simple connected ``k``-regular graph on ``n`` nodes exists and is useful."""
    if n < 2:
        raise ValueError(f"need at least 2 groups, got n={n}")
    if not 1 <= k < n:
        raise ValueError(f"degree k must satisfy 1 <= k < n (groups), got k={k}, n={n}")
    if (k * n) % 2:
        raise ValueError(f"k * n must be even for a k-regular graph, got k={k}, n={n}")
    if k == 1 and n > 2:
        raise ValueError(f"a 1-regular graph on n={n} > 2 nodes is disconnected; use k >= 2")


def aspl(adjacency: np.ndarray) -> float:
    """Average shortest path length over ordered pairs ``u != v``; ``inf`` if disconnected.

    Args:
        adjacency: bool ``[n, n]``, symmetric.
    """
    n = adjacency.shape[0]
    step = adjacency.astype(np.float32)
    reached = np.eye(n, dtype=bool)
    total, distance = 0, 0
    while True:
        distance += 1
        grown = reached | (reached.astype(np.float32) @ step > 0)
        new = int(grown.sum() - reached.sum())
        if new == 0:
            break
        total += distance * new
        reached = grown
    return total / (n * (n - 1)) if reached.all() else math.inf


def is_connected(adjacency: np.ndarray) -> bool:
    return math.isfinite(aspl(adjacency))


def random_regular_graph(n: int, k: int, rng: np.random.Generator, max_tries: int = 1000) -> np.ndarray:
    """A uniformly-ish random connected simple ``k``-regular graph (Steger-Wormald pairing).

    Stubs (``k`` per node) are paired at random; pairs that would make a loop or a multi-edge are
    returned to the pool and re-paired, restarting when the leftover stubs cannot be paired.
    Disconnected results are rejected.

    Returns:
        bool ``[n, n]`` adjacency.
    """
    check_regular(n, k)
    for _ in range(max_tries):
        adjacency = _try_pairing(n, k, rng)
        if adjacency is not None and is_connected(adjacency):
            return adjacency
    raise RuntimeError(f"no connected {k}-regular graph on {n} nodes after {max_tries} tries")


def _try_pairing(n: int, k: int, rng: np.random.Generator) -> np.ndarray | None:
    adjacency = np.zeros((n, n), dtype=bool)
    stubs = np.repeat(np.arange(n), k)
    while len(stubs):
        stubs = rng.permutation(stubs)
        left = []
        for u, v in zip(stubs[0::2], stubs[1::2]):
            if u != v and not adjacency[u, v]:
                adjacency[u, v] = adjacency[v, u] = True
            else:
                left += [u, v]
        stubs = np.array(left, dtype=np.int64)
        if len(stubs) and not _pairable(adjacency, stubs):
            return None
    return adjacency


def _pairable(adjacency: np.ndarray, stubs: np.ndarray) -> bool:
    """Is there any pair of distinct leftover nodes not yet joined?"""
    nodes = np.unique(stubs)
    sub = adjacency[np.ix_(nodes, nodes)]
    return bool((~sub & ~np.eye(len(nodes), dtype=bool)).any())


@dataclass(frozen=True)
class SwapResult:
    """Outcome of :func:`optimise_aspl`."""

    adjacency: np.ndarray
    aspl_before: float
    aspl_after: float
    proposed: int
    accepted: int


def optimise_aspl(adjacency: np.ndarray, rng: np.random.Generator, swaps: int = DEFAULT_SWAPS) -> SwapResult:
    """Lower the ASPL by degree-preserving double-edge swaps.

    Each proposal takes two edges ``(a, b), (c, d)`` on four distinct nodes and rewires them to
    ``(a, d), (c, b)`` (or ``(a, c), (b, d)``) when neither new edge exists. It is accepted only
    if the graph stays connected and its ASPL does not grow; the current ASPL is updated after
    every accepted swap, so later proposals compare against the graph as it is.

    Args:
        adjacency: bool ``[n, n]``, connected, symmetric.
        swaps: number of proposals.
    """
    graph = adjacency.copy()
    before = current = aspl(graph)
    if not math.isfinite(before):
        raise ValueError("the graph must be connected")
    accepted = 0
    for _ in range(swaps):
        upper = np.argwhere(np.triu(graph))
        i, j = rng.choice(len(upper), size=2, replace=False)
        (a, b), (c, d) = upper[i], upper[j]
        if rng.random() < 0.5:
            c, d = d, c
        if len({a, b, c, d}) < 4 or graph[a, d] or graph[c, b]:
            continue
        _rewire(graph, (a, b), (c, d), (a, d), (c, b))
        candidate = aspl(graph)
        if candidate <= current:
            current = candidate
            accepted += 1
        else:
            _rewire(graph, (a, d), (c, b), (a, b), (c, d))
    return SwapResult(graph, before, current, swaps, accepted)


def _rewire(graph: np.ndarray, old1, old2, new1, new2) -> None:
    for (u, v), value in ((old1, False), (old2, False), (new1, True), (new2, True)):
        graph[u, v] = graph[v, u] = value
