"""Properties of the mask engine for any sizes, targets and scores (hypothesis)."""
import io

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gnnprune.graph import EdgeSet
from gnnprune.masks import MaskEngine, SiteKind, kept_count, prune_and_regrow, tie_groups, tie_order, tolerant_argmax

PROPERTY = settings(max_examples=60, deadline=None)

shapes = st.one_of(st.tuples(st.integers(1, 300)), st.tuples(st.integers(1, 20), st.integers(1, 20)))
fractions = st.floats(0.0, 1.0, allow_nan=False)
seeds = st.integers(0, 2**31 - 1)


def _scores(numel: int, seed: int, ties: bool) -> torch.Tensor:
    """Random scores; with ``ties`` only a few distinct values, so tie-breaking is exercised."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, (numel,), generator=g).float() if ties else torch.randn(numel, generator=g)


def _engine(shape, seed, dead_fraction=0.0):
    engine = MaskEngine()
    engine.add("s", SiteKind.WEIGHT, shape)
    numel = engine.site("s").numel
    engine.prune("s", int(dead_fraction * numel), _scores(numel, seed + 1, False))
    return engine


@PROPERTY
@given(shape=shapes, dead=fractions, take=fractions, seed=seeds, ties=st.booleans())
def test_prune_kills_exactly_n_of_the_lowest_live_and_never_revives(shape, dead, take, seed, ties):
    engine = _engine(shape, seed, dead)
    before = engine.mask("s").clone()
    n = int(take * int(before.sum()))
    scores = _scores(before.numel(), seed, ties)
    killed = engine.prune("s", n, scores.view(shape))
    after = engine.mask("s")
    assert int(after.sum()) == int(before.sum()) - n == int(before.sum()) - killed.numel()
    assert not bool((after & ~before).any())  # nothing revived
    assert bool(before.view(-1)[killed].all()) and not bool(after.view(-1)[killed].any())
    survivors = scores[after.view(-1)]
    if n and survivors.numel():
        assert scores[killed].max() <= survivors.min()  # lowest first
    # ties go to the lower index: among equal scores at the cut, a survivor never precedes a killed entry
    if n and survivors.numel():
        cut = scores[killed].max()
        tied_survivors = (after.view(-1) & (scores == cut)).nonzero().view(-1)
        tied_killed = killed[scores[killed] == cut]
        if tied_survivors.numel():
            assert tied_killed.max() < tied_survivors.min()


@PROPERTY
@given(shape=shapes, dead=fractions, take=fractions, seed=seeds, ties=st.booleans(), restrict=st.booleans())
def test_grow_revives_exactly_n_of_the_highest_dead_and_never_kills(shape, dead, take, seed, ties, restrict):
    engine = _engine(shape, seed, dead)
    before = engine.mask("s").clone()
    eligible = None
    candidates = ~before
    if restrict:
        eligible = torch.rand(before.shape, generator=torch.Generator().manual_seed(seed + 2)) < 0.5
        candidates = candidates & eligible
    n = int(take * int(candidates.sum()))
    scores = _scores(before.numel(), seed, ties)
    grown = engine.grow("s", n, scores.view(shape), eligible=eligible)
    after = engine.mask("s")
    assert int(after.sum()) == int(before.sum()) + n == int(before.sum()) + grown.numel()
    assert not bool((before & ~after).any())  # nothing killed
    assert bool(candidates.view(-1)[grown].all())
    left = scores[(candidates & ~after).view(-1)]
    if n and left.numel():
        assert scores[grown].min() >= left.max()  # highest first


@PROPERTY
@given(shape=shapes, dead=fractions, sparsity=st.floats(0.0, 1.0, exclude_max=True), regrow=fractions, seed=seeds,
       ties=st.booleans())
def test_prune_and_regrow_reaches_the_exact_count(shape, dead, sparsity, regrow, seed, ties):
    engine = _engine(shape, seed, dead)
    numel, live = engine.site("s").numel, engine.site("s").live
    before = engine.mask("s").clone()
    update = prune_and_regrow(engine, "s", sparsity, regrow, _scores(numel, seed, ties).view(shape),
                              _scores(numel, seed + 3, ties).view(shape))
    assert engine.site("s").live == min(live, kept_count(numel, sparsity))
    assert update.grown.numel() == update.swapped_out.numel()
    assert not set(update.grown.tolist()) & set(update.swapped_out.tolist())
    if regrow == 0.0:
        assert update.grown.numel() == 0
        assert not bool((engine.mask("s") & ~before).any())


@PROPERTY
@given(shape=shapes, steps=st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1, max_size=6), seed=seeds)
def test_with_zero_regrowth_masks_only_shrink(shape, steps, seed):
    engine = _engine(shape, seed)
    numel = engine.site("s").numel
    for i, sparsity in enumerate(steps):
        before = engine.mask("s").clone()
        prune_and_regrow(engine, "s", sparsity, 0.0, _scores(numel, seed + i, True).view(shape),
                         _scores(numel, seed - i, False).view(shape))
        assert not bool((engine.mask("s") & ~before).any())
        assert engine.site("s").live == min(int(before.sum()), kept_count(numel, sparsity))


@st.composite
def graphs(draw):
    n = draw(st.integers(2, 25))
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), min_size=1, max_size=60))
    index = torch.tensor(pairs, dtype=torch.long).t()
    return EdgeSet.from_edge_index(index, n)


@PROPERTY
@given(edges=graphs(), sparsity=st.floats(0.0, 1.0, exclude_max=True), regrow=fractions, seed=seeds,
       weighted=st.booleans())
def test_edge_masks_stay_symmetric(edges, sparsity, regrow, seed, weighted):
    engine = MaskEngine()
    engine.add("edges", SiteKind.EDGE, edges.num_edges)
    e = edges.num_edges
    if e:
        prune_and_regrow(engine, "edges", sparsity, regrow, _scores(e, seed, True), _scores(e, seed + 1, False))
    selection = edges.select(engine.mask("edges"))
    directed = {tuple(pair) for pair in selection.edge_index.t().tolist()}
    assert directed == {(v, u) for u, v in directed}
    assert len(directed) == 2 * engine.site("edges").live
    weight = torch.rand(selection.num_kept, generator=torch.Generator().manual_seed(seed)) if weighted else None
    for operator in (selection.gcn_operator(weight), selection.mean_operator(weight)):
        dense = operator.to_dense()
        assert torch.equal(dense != 0, (dense != 0).t())  # same pattern both ways
    gcn = selection.gcn_operator(weight).to_dense()
    assert torch.allclose(gcn, gcn.t(), atol=1e-6)


@PROPERTY
@given(sites=st.lists(st.tuples(st.sampled_from(list(SiteKind)), shapes, fractions), min_size=1, max_size=5),
       seed=seeds)
def test_state_dict_round_trip_is_identity(sites, seed):
    engine = MaskEngine()
    for i, (kind, shape, dead) in enumerate(sites):
        engine.add(f"site{i}", kind, shape, index=i, note="x")
        numel = engine.site(f"site{i}").numel
        engine.prune(f"site{i}", int(dead * numel), _scores(numel, seed + i, True).view(shape))
    buffer = io.BytesIO()
    torch.save(engine.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = MaskEngine.from_state_dict(state)
    fresh = MaskEngine()
    for site in engine:
        fresh.add(site.name, site.kind, site.mask.shape)
    fresh.load_state_dict(state)
    for copy in (restored, fresh):
        assert [s.name for s in copy] == [s.name for s in engine]
        for site in engine:
            assert torch.equal(copy.mask(site.name), site.mask) and copy.site(site.name).kind == site.kind
    assert all(restored.site(s.name).meta == s.meta for s in engine)
    assert restored.summary() == engine.summary()


@PROPERTY
@given(levels=st.lists(st.integers(-3, 3), min_size=1, max_size=40), seed=seeds, scale=st.floats(1e-3, 1e3))
def test_scores_perturbed_below_the_tolerance_rank_like_their_exact_values(levels, seed, scale):
    """Rounding-sized noise never changes a tolerant ranking: it equals the exact ranking of the
    unperturbed scores (ties by index), and the tolerant arg-max is its first entry."""
    exact = torch.tensor(levels, dtype=torch.float64) * scale
    atol = 1e-9 * scale
    noise = (torch.rand(exact.numel(), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) - 0.5) * atol / 2
    noisy = exact + noise
    assert torch.equal(tie_groups(noisy, atol), torch.unique(exact, return_inverse=True)[1])
    for descending in (False, True):
        expected = torch.sort(-exact if descending else exact, stable=True).indices
        assert torch.equal(tie_order(noisy, atol, descending), expected)
        assert torch.equal(tie_order(exact, 0.0, descending), expected)
    assert tolerant_argmax(noisy, atol) == int(tie_order(noisy, atol, descending=True)[0]) == int(exact.argmax())
