"""Spreading one overall weight sparsity over the weight tensors (uniform and ERK)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gnnprune.copruning import CoPruner, PruneTargets
from gnnprune.masks import WeightDistribution, kept_count, kept_per_tensor
from gnnprune.nn import GCN
from gnnprune.schedules import CubicSparsity
from helpers import tiny_graph

ERK = WeightDistribution.ERK

# GCN on Cora: 1433 -> 256 -> 7
CORA_GCN = {"convs.0.lin.weight": (1433, 256), "convs.1.lin.weight": (256, 7)}


def test_uniform_gives_every_tensor_the_overall_sparsity():
    assert kept_per_tensor(CORA_GCN, 0.9) == {name: kept_count(math.prod(s), 0.9) for name, s in CORA_GCN.items()}


def test_erk_keeps_a_small_classifier_dense_and_takes_the_rest_from_the_input_layer():
    total = sum(math.prod(s) for s in CORA_GCN.values())
    kept = kept_per_tensor(CORA_GCN, 0.9, ERK)
    assert kept["convs.1.lin.weight"] == 256 * 7
    assert kept["convs.0.lin.weight"] == kept_count(total, 0.9) - 256 * 7
    # at 98% the classifier keeps 55% (ERK: 3.78 x 263 / 1792) where uniform leaves 36 weights
    kept = kept_per_tensor(CORA_GCN, 0.98, ERK)
    assert sum(kept.values()) == kept_count(total, 0.98)
    assert kept["convs.1.lin.weight"] == 993


def test_erk_densities_follow_the_kernel_factor_when_nothing_saturates():
    shapes = {"a": (100, 100), "b": (400, 100), "c": (50, 10)}
    kept = kept_per_tensor(shapes, 0.97, ERK)
    density = {n: kept[n] / math.prod(s) for n, s in shapes.items()}
    factor = {n: sum(s) / math.prod(s) for n, s in shapes.items()}
    # density / factor is the same constant for every tensor, up to rounding to whole entries
    ratios = [density[n] / factor[n] for n in shapes]
    assert max(ratios) - min(ratios) < 2 * max(1 / (factor[n] * math.prod(s)) for n, s in shapes.items())
    assert density["c"] > density["a"] > density["b"]


def test_erk_hands_a_tied_remainder_to_the_first_name():
    # equal shapes get bitwise equal fractional parts (4.5 each): the odd entry goes by name, not by rounding
    assert kept_per_tensor({"b": (3, 3), "a": (3, 3)}, 0.5, ERK) == {"a": 5, "b": 4}


_shapes = st.dictionaries(st.sampled_from("abcdef"), st.tuples(st.integers(1, 300), st.integers(1, 300)),
                          min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(shapes=_shapes, sparsity=st.floats(0.0, 1.0))
def test_erk_counts_are_exact_and_within_bounds(shapes, sparsity):
    kept = kept_per_tensor(shapes, sparsity, ERK)
    total = sum(math.prod(s) for s in shapes.values())
    assert sum(kept.values()) == kept_count(total, sparsity)
    assert all(0 <= kept[n] <= math.prod(s) for n, s in shapes.items())


@settings(max_examples=200, deadline=None)
@given(shapes=_shapes, low=st.floats(0.0, 1.0), high=st.floats(0.0, 1.0))
def test_erk_never_asks_a_tensor_to_regrow_as_the_target_rises(shapes, low, high):
    low, high = min(low, high), max(low, high)
    before, after = kept_per_tensor(shapes, low, ERK), kept_per_tensor(shapes, high, ERK)
    assert all(after[n] <= before[n] for n in shapes)


def test_bad_distribution_and_sparsity_are_refused():
    with pytest.raises(ValueError):
        kept_per_tensor(CORA_GCN, 0.5, "triangular")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        kept_per_tensor(CORA_GCN, 1.5, ERK)


def test_co_pruner_reaches_the_exact_overall_weight_count_along_a_schedule():
    torch.manual_seed(0)
    data = tiny_graph(num_features=6)
    model = GCN(6, 16, 3, num_layers=3, dropout=0.0)
    pruner = CoPruner(model, data, weight_distribution=ERK)
    sizes = {n: pruner.engine.site("weight:" + n).numel for n in pruner.weights}
    schedule = CubicSparsity(initial=0.0, final=0.85, start=0, end=10)
    for step in range(0, 11):
        target = schedule(step)
        scores = {site.name: torch.rand(site.mask.shape) for site in pruner.engine.sites()}
        pruner.update(PruneTargets(weights=target), prune_scores=scores)
        live = {n: pruner.engine.site("weight:" + n).live for n in pruner.weights}
        expected = kept_per_tensor({n: tuple(p.shape) for n, p in pruner.weights.items()}, target, ERK, sizes)
        assert live == expected
    assert sum(live.values()) == kept_count(sum(sizes.values()), 0.85)


def test_ugs_refuses_a_non_uniform_distribution_and_the_cli_passes_erk_through():
    from gnnprune.cli import _config_from_args, build_parser
    from gnnprune.config import ExperimentConfig

    with pytest.raises(ValueError, match="uniform"):
        ExperimentConfig("cora", method="ugs", targets=PruneTargets(weights=0.5), weight_distribution=ERK)
    args = build_parser().parse_args(["prune", "--dataset", "cora", "--weight-sparsity", "0.9",
                                      "--weight-distribution", "erk", "--out", "unused"])
    assert _config_from_args(args).weight_distribution is ERK
