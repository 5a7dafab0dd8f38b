"""Spreading one overall weight sparsity over the weight tensors (uniform, ERK and global ranking)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gnnprune.copruning import EDGES, CoPruner, PruneTargets
from gnnprune.masks import WeightDistribution, kept_by_global_rank, kept_count, kept_per_tensor
from gnnprune.nn import GCN
from gnnprune.schedules import CubicSparsity
from helpers import tiny_graph

ERK = WeightDistribution.ERK
GLOBAL = WeightDistribution.GLOBAL

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


def test_global_rank_keeps_the_highest_scores_of_all_tensors_together():
    scores = {"a": torch.tensor([[0.9, 0.1], [0.5, 0.3]]), "b": torch.tensor([0.8, 0.2, 0.7])}
    # 7 entries at 4/7 sparsity keep 3: 0.9 (a), 0.8 (b), 0.7 (b)
    assert kept_by_global_rank(scores, 4 / 7) == {"a": 1, "b": 2}
    assert kept_by_global_rank(scores, 0.0) == {"a": 4, "b": 3}
    assert kept_by_global_rank(scores, 1.0) == {"a": 0, "b": 0}


def test_global_rank_never_keeps_minus_infinity_and_breaks_ties_by_order():
    inf = float("inf")
    scores = {"a": torch.tensor([-inf, 1.0, 1.0]), "b": torch.tensor([1.0, -inf])}
    # keep 3 of 5: the three finite ones; keep 2: the tie at 1.0 goes to the earlier tensor
    assert kept_by_global_rank(scores, 0.4) == {"a": 2, "b": 1}
    assert kept_by_global_rank(scores, 0.6) == {"a": 2, "b": 0}
    # asking for more than the candidates keeps only those
    assert kept_by_global_rank(scores, 0.0) == {"a": 2, "b": 1}
    # +inf (an entry a method keeps first, as COLT's intersection) is a candidate like any other
    assert kept_by_global_rank({"a": torch.tensor([inf, 0.5]), "b": torch.tensor([inf, 2.0])}, 0.5) == {"a": 1, "b": 1}
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        kept_by_global_rank(scores, -0.1)
    with pytest.raises(ValueError, match="kept_by_global_rank"):
        kept_per_tensor(CORA_GCN, 0.5, GLOBAL)


def test_co_pruner_global_prunes_the_smallest_magnitudes_of_the_whole_model():
    torch.manual_seed(0)
    data = tiny_graph(num_features=6)
    model = GCN(6, 16, 3, num_layers=2, dropout=0.0)
    pruner = CoPruner(model, data, weight_distribution=GLOBAL)
    with torch.no_grad():  # distinct magnitudes: every output weight above every input weight
        names = list(pruner.weights)
        pruner.weights[names[0]].copy_(torch.arange(1, 97, dtype=torch.float).view_as(pruner.weights[names[0]]))
        pruner.weights[names[1]].copy_(100 * torch.arange(1, 49, dtype=torch.float).view_as(pruner.weights[names[1]]))
    fixed_edges = {EDGES: torch.ones(pruner.edge_set.num_edges)}
    pruner.update(PruneTargets(weights=0.5), prune_scores=fixed_edges)
    live = {n: pruner.engine.site("weight:" + n).live for n in names}
    # 144 weights keep 72: all 48 output weights (>= 100) and the 24 largest input weights (73..96)
    assert live == {names[0]: 24, names[1]: 48}
    kept_input = pruner.weights[names[0]][pruner.engine.mask("weight:" + names[0])]
    assert sorted(kept_input.tolist()) == [float(v) for v in range(73, 97)]
    pruner.update(PruneTargets(weights=0.9), prune_scores=fixed_edges)  # masks only shrink: 14 of 144, all from the output layer
    assert {n: pruner.engine.site("weight:" + n).live for n in names} == {names[0]: 0, names[1]: 14}


def test_rounds_take_any_distribution_and_the_cli_passes_it_through():
    from gnnprune.cli import _config_from_args, build_parser
    from gnnprune.config import ExperimentConfig

    for method in ("ugs", "colt"):
        config = ExperimentConfig("cora", method=method, targets=PruneTargets(weights=0.5), weight_distribution=ERK)
        assert config.weight_distribution is ERK
        assert ExperimentConfig.for_model("gat", method=method).weight_distribution is WeightDistribution.UNIFORM
    for value in ("erk", "global"):
        args = build_parser().parse_args(["prune", "--dataset", "cora", "--weight-sparsity", "0.9",
                                          "--weight-distribution", value, "--out", "unused"])
        assert _config_from_args(args).weight_distribution is WeightDistribution(value)
