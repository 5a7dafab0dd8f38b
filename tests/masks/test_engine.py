import pytest
import torch

from gnnprune.masks import (MaskEngine, SiteKind, highest, kept_count, lowest, prune_and_regrow, tie_groups, tie_order,
                            tolerant_argmax)


def _engine(n=10):
    engine = MaskEngine()
    engine.add("w", SiteKind.WEIGHT, (2, n // 2))
    return engine


def test_prune_kills_exactly_n_lowest_live_entries():
    engine = _engine()
    scores = torch.arange(10, dtype=torch.float).view(2, 5)
    killed = engine.prune("w", 3, scores)
    assert sorted(killed.tolist()) == [0, 1, 2]
    assert engine.site("w").live == 7
    # already-dead entries are not candidates: the next prune takes the next lowest
    killed = engine.prune("w", 2, scores)
    assert sorted(killed.tolist()) == [3, 4]
    assert engine.density("w") == pytest.approx(0.5)


def test_grow_revives_exactly_n_highest_dead_entries_and_never_live_ones():
    engine = _engine()
    engine.prune("w", 6, torch.arange(10.0))  # dead: 0..5
    scores = torch.zeros(10)
    scores[[1, 4, 9]] = torch.tensor([5.0, 7.0, 100.0])  # 9 is live: must not be "grown"
    grown = engine.grow("w", 2, scores)
    assert sorted(grown.tolist()) == [1, 4]
    assert engine.site("w").live == 6


def test_ties_break_by_index():
    engine = _engine()
    killed = engine.prune("w", 4, torch.zeros(10))
    assert killed.tolist() == [0, 1, 2, 3]
    grown = engine.grow("w", 2, torch.zeros(10))
    assert grown.tolist() == [0, 1]


def test_counts_beyond_candidates_raise():
    engine = _engine()
    with pytest.raises(ValueError, match="only 10"):
        engine.prune("w", 11, torch.zeros(10))
    with pytest.raises(ValueError, match="only 0"):
        engine.grow("w", 1, torch.zeros(10))
    with pytest.raises(ValueError, match="NaN"):
        engine.prune("w", 1, torch.full((10,), float("nan")))
    with pytest.raises(ValueError, match="10 entries"):
        engine.prune("w", 1, torch.zeros(9))


def test_eligible_restricts_growth():
    engine = _engine()
    engine.prune("w", 10, torch.zeros(10))
    eligible = torch.zeros(10, dtype=torch.bool)
    eligible[[2, 3]] = True
    grown = engine.grow("w", 2, torch.arange(10.0), eligible=eligible)
    assert sorted(grown.tolist()) == [2, 3]
    with pytest.raises(ValueError):
        engine.grow("w", 1, torch.arange(10.0), eligible=eligible)


def test_state_dict_round_trip(tmp_path):
    engine = MaskEngine()
    engine.add("edges", SiteKind.EDGE, 7)
    engine.add("w", "weight", (3, 4), role="test")
    engine.prune("edges", 3, torch.randn(7))
    engine.prune("w", 5, torch.randn(12))
    torch.save(engine.state_dict(), tmp_path / "m.pt")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    restored = MaskEngine.from_state_dict(state)
    for site in engine:
        assert torch.equal(restored.mask(site.name), site.mask)
        assert restored.site(site.name).kind == site.kind
    other = MaskEngine()
    other.add("edges", SiteKind.EDGE, 7)
    with pytest.raises(KeyError, match="missing"):
        other.load_state_dict({})
    with pytest.raises(KeyError, match="unexpected"):
        other.load_state_dict(state)


def test_duplicate_and_unknown_sites():
    engine = _engine()
    with pytest.raises(KeyError, match="already"):
        engine.add("w", SiteKind.WEIGHT, 3)
    with pytest.raises(KeyError, match="unknown site"):
        engine.site("nope")


def test_density_over_kinds():
    engine = MaskEngine()
    engine.add("a", SiteKind.WEIGHT, 10)
    engine.add("b", SiteKind.WEIGHT, 30)
    engine.add("e", SiteKind.EDGE, 5)
    engine.prune("a", 10, torch.zeros(10))
    assert engine.density(kind=SiteKind.WEIGHT) == pytest.approx(0.75)
    assert engine.density(kind="edge") == 1.0
    assert engine.sparsity() == pytest.approx(10 / 45)


@pytest.mark.parametrize("numel,sparsity", [(5278, 0.5), (1433, 0.5), (1433 * 256, 0.9), (7, 0.3), (1, 0.0)])
def test_prune_and_regrow_reaches_exact_count(numel, sparsity):
    engine = MaskEngine()
    engine.add("s", SiteKind.WEIGHT, numel)
    g = torch.Generator().manual_seed(0)
    update = prune_and_regrow(engine, "s", sparsity, 0.3, torch.rand(numel, generator=g), torch.rand(numel, generator=g))
    assert engine.site("s").live == kept_count(numel, sparsity) == numel - round(sparsity * numel)
    assert update.grown.numel() == update.swapped_out.numel()
    # the only dead entries before the swap are the ones pruned in step 1
    assert set(update.grown.tolist()) <= set(update.pruned.tolist())
    assert not set(update.grown.tolist()) & set(update.swapped_out.tolist())
    assert engine.mask("s")[update.grown].all() and not engine.mask("s")[update.swapped_out].any()


def test_regrowth_never_exceeds_budget_and_does_not_revive_just_swapped():
    engine = MaskEngine()
    engine.add("s", SiteKind.WEIGHT, 100)
    engine.prune("s", 90, torch.arange(100.0))  # live: 90..99, dead: 0..89
    eligible = torch.zeros(100, dtype=torch.bool)
    eligible[:3] = True  # only three dead entries may come back
    update = prune_and_regrow(engine, "s", 0.9, 0.5, prune_scores=torch.arange(100.0),
                              grow_scores=torch.arange(100.0).flip(0), eligible=eligible)
    assert update.pruned.numel() == 0
    assert update.grown.numel() == update.swapped_out.numel() == 3  # bounded by eligible dead entries
    assert set(update.grown.tolist()) == {0, 1, 2}
    assert not set(update.grown.tolist()) & set(update.swapped_out.tolist())
    assert engine.site("s").live == 10


def test_kept_count_validates():
    with pytest.raises(ValueError):
        kept_count(10, 1.5)


def test_tolerance_ties_scores_within_it_and_breaks_them_by_index():
    scores = torch.tensor([1.0 + 2e-12, 1.0, 1.0 + 1e-12, 3.0], dtype=torch.float64)
    live = torch.ones(4, dtype=torch.bool)
    assert lowest(scores, live, 2).tolist() == [1, 2]  # exact by default
    assert lowest(scores, live, 2, tolerance=1e-9).tolist() == [0, 1]  # one tie group, index order
    assert highest(scores, live, 2, tolerance=1e-9).tolist() == [3, 0]
    engine = _engine(4)
    assert engine.prune("w", 2, scores.view(2, 2), tolerance=1e-9).tolist() == [0, 1]
    exact, tolerant = MaskEngine.from_state_dict(engine.state_dict()), engine
    assert exact.grow("w", 1, -scores.view(2, 2)).tolist() == [1]  # -1.0 > -(1 + 2e-12)
    assert tolerant.grow("w", 1, -scores.view(2, 2), tolerance=1e-9).tolist() == [0]


def test_tolerance_keeps_the_order_of_scores_further_apart():
    scores = torch.tensor([1.0 + 1e-6, 1.0, 2.0], dtype=torch.float64)
    live = torch.ones(3, dtype=torch.bool)
    assert lowest(scores, live, 1, tolerance=1e-9).tolist() == [1]
    assert highest(scores, live, 2, tolerance=1e-9).tolist() == [2, 0]
    # float32 scores one ulp apart are tied under a float32-sized tolerance only
    close = torch.tensor([1.0 + 2 ** -23, 1.0])
    assert lowest(close, torch.ones(2, dtype=torch.bool), 1).tolist() == [1]
    assert lowest(close, torch.ones(2, dtype=torch.bool), 1, tolerance=1e-6).tolist() == [0]


def test_tie_groups_chain_and_leave_infinities_exact():
    atol = 1e-9
    values = torch.tensor([1.0, 1.0 + 0.8e-9, 1.0 + 1.6e-9, 1.0 + 5e-9], dtype=torch.float64)
    assert tie_groups(values, atol).tolist() == [0, 0, 0, 1]  # 1.0 and 1.0 + 1.6e-9 joined by the middle one
    values = torch.tensor([float("-inf"), 2.0, float("-inf"), 1.0, float("inf")], dtype=torch.float64)
    assert tie_groups(values, 1.0).tolist() == [0, 1, 0, 1, 2]
    assert tie_order(values, 1.0).tolist() == [0, 2, 1, 3, 4]
    assert tie_order(values, 1.0, descending=True).tolist() == [4, 1, 3, 0, 2]
    assert tolerant_argmax(values, 1.0) == 4 and tolerant_argmax(values[:4], 1.0) == 1
    # the relative tolerance is taken over finite scores: -inf (pruned-feature rows) stays first
    assert lowest(values[:4], torch.ones(4, dtype=torch.bool), 3, tolerance=0.5).tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="tolerance"):
        lowest(values, torch.ones(5, dtype=torch.bool), 1, tolerance=-1.0)
