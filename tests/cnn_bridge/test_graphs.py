import math
import time

import numpy as np
import pytest

from cnn_bridge.graphs import aspl, check_regular, is_connected, optimise_aspl, random_regular_graph


def adjacency_from_edges(n, edges):
    a = np.zeros((n, n), dtype=bool)
    for u, v in edges:
        a[u, v] = a[v, u] = True
    return a


def test_aspl_of_hand_built_graphs():
    cycle4 = adjacency_from_edges(4, [(0, 1), (1, 2), (2, 3), (3, 0)])
    assert aspl(cycle4) == pytest.approx(4 / 3)  # each node: 1 + 2 + 1 over 3 others
    path3 = adjacency_from_edges(3, [(0, 1), (1, 2)])
    assert aspl(path3) == pytest.approx((1 + 2 + 1 + 1 + 2 + 1) / 6)
    assert aspl(~np.eye(5, dtype=bool)) == 1.0
    two_edges = adjacency_from_edges(4, [(0, 1), (2, 3)])
    assert math.isinf(aspl(two_edges)) and not is_connected(two_edges)


@pytest.mark.parametrize("n,k,message", [(8, 8, "1 <= k < n"), (8, 9, "1 <= k < n"), (7, 3, "even"),
                                         (1, 1, "at least 2"), (6, 1, "disconnected")])
def test_bad_regular_parameters(n, k, message):
    with pytest.raises(ValueError, match=message):
        check_regular(n, k)


@pytest.mark.parametrize("n,k,seed", [(64, 16, 0), (64, 16, 1), (16, 3, 2), (10, 4, 3), (32, 31, 4)])
def test_random_regular_graph_is_simple_regular_connected(n, k, seed):
    a = random_regular_graph(n, k, np.random.default_rng(seed))
    assert (a == a.T).all() and not a.diagonal().any()
    assert (a.sum(0) == k).all()
    assert is_connected(a)


@pytest.mark.parametrize("n,k,seed", [(64, 16, 0), (64, 16, 1), (64, 16, 2), (16, 4, 0), (32, 4, 1)])
def test_optimise_aspl_keeps_degrees_and_connectivity_and_never_grows(n, k, seed):
    rng = np.random.default_rng(seed)
    graph = random_regular_graph(n, k, rng)
    start = time.perf_counter()
    result = optimise_aspl(graph, rng)  # default swap budget
    seconds = time.perf_counter() - start
    assert seconds <= 2.0  # acceptance: n=64, k=16 within 2 s (measured ~0.1 s)
    a = result.adjacency
    assert (a == a.T).all() and not a.diagonal().any() and (a.sum(0) == k).all()
    assert result.aspl_after <= result.aspl_before
    assert result.aspl_before == pytest.approx(aspl(graph))
    assert result.aspl_after == pytest.approx(aspl(a))  # the recorded value is the graph's, not a stale one
    assert (graph.sum(0) == k).all()  # input untouched


def test_optimise_aspl_lowers_the_aspl_of_a_sparse_graph():
    rng = np.random.default_rng(0)
    graph = random_regular_graph(32, 4, rng)
    result = optimise_aspl(graph, rng, swaps=500)
    assert result.aspl_after < result.aspl_before
    assert result.accepted > 0


def test_zero_swaps_returns_the_graph():
    rng = np.random.default_rng(0)
    graph = random_regular_graph(16, 4, rng)
    result = optimise_aspl(graph, rng, swaps=0)
    assert (result.adjacency == graph).all() and result.aspl_after == result.aspl_before
