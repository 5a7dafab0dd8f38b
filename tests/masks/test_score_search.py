"""The jackpot score search on the engine: straight-through masks, exact swaps, frozen weights."""
import pytest
import torch

from gnnprune.masks import (MaskEngine, ScoreSearch, ScoreSearchConfig, SiteKind, initial_scores, straight_through,
                            swap_count, swap_to_top)

PLAIN_SGD = ScoreSearchConfig(lr=1.0, momentum=0.0, weight_decay=0.0)


def _engine(mask):
    engine = MaskEngine()
    engine.add("w", SiteKind.WEIGHT, tuple(mask.shape), mask)
    return engine


def test_initial_scores_are_one_where_kept_and_one_minus_the_gap_elsewhere():
    keep = torch.tensor([True, False, True, False])
    assert initial_scores(keep, 0.25).tolist() == [1.0, 0.75, 1.0, 0.75]
    assert initial_scores(keep).dtype == torch.float32


def test_one_step_swaps_exactly_one_pair_and_leaves_the_weights_bit_identical():
    # W = [3, -2, 0.5, 1] at 50%: magnitude keeps entries 0 and 1.
    weight = torch.tensor([[3.0, -2.0, 0.5, 1.0]])
    frozen = weight.clone()
    engine = _engine(torch.tensor([[True, True, False, False]]))
    search = ScoreSearch(engine, ["w"], PLAIN_SGD, total_steps=10)
    # L = -sum(c * W * m): dL/dm = -c * W, so one SGD step at lr 1 adds c * W to the scores:
    # scores [1, 1 - 0.2, 0.99, 0.99 + 0.1] = [1, 0.8, 0.99, 1.09]
    c = torch.tensor([[0.0, 0.1, 0.0, 0.1]])
    loss = -(c * weight * search.mask("w")).sum()
    loss.backward()
    swapped = search.step()
    assert torch.allclose(search.scores["w"].detach(), torch.tensor([[1.0, 0.8, 0.99, 1.09]]))
    assert swapped == {"w": 1}
    assert engine.mask("w").tolist() == [[True, False, False, True]]  # entry 1 out, entry 3 in
    assert torch.equal(weight, frozen)


def test_straight_through_gradient_equals_the_masked_weight_gradient():
    torch.manual_seed(0)
    weight = torch.randn(3, 5)
    x, c = torch.randn(4, 5), torch.randn(4, 3)
    mask = torch.rand(3, 5) > 0.5
    scores = initial_scores(mask).requires_grad_(True)
    effective = weight * straight_through(scores, mask)
    effective.retain_grad()
    (c * (x @ effective.T)).sum().backward()
    # dL/d(W*m) = c^T x; the scores get it times W, at dead entries too
    assert torch.allclose(effective.grad, c.T @ x, atol=1e-6)
    assert torch.allclose(scores.grad, (c.T @ x) * weight, atol=1e-6)
    assert bool((scores.grad[~mask] != 0).all())
    assert torch.equal(effective.detach(), weight * mask)


def test_sparsity_is_exact_after_every_step_and_the_live_set_is_a_top_k_set():
    torch.manual_seed(1)
    weights = {"a": torch.randn(6, 7), "b": torch.randn(7, 3)}
    engine = MaskEngine()
    for name, w in weights.items():
        keep = torch.zeros(w.numel(), dtype=torch.bool)
        keep[w.abs().reshape(-1).argsort(descending=True)[: w.numel() // 4]] = True
        engine.add(name, SiteKind.WEIGHT, tuple(w.shape), keep.view(w.shape))
    live = {name: engine.site(name).live for name in weights}
    frozen = {name: w.clone() for name, w in weights.items()}
    search = ScoreSearch(engine, list(weights), ScoreSearchConfig(lr=5.0), total_steps=30)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    total = 0
    for _ in range(30):
        search.zero_grad()
        hidden = torch.relu(x @ (weights["a"] * search.mask("a")))
        loss = torch.nn.functional.cross_entropy(hidden @ (weights["b"] * search.mask("b")), y)
        loss.backward()
        total += sum(search.step().values())
        for name in weights:
            site = engine.site(name)
            assert site.live == live[name]
            scores = search.scores[name].detach()
            assert scores[site.mask].min() >= scores[~site.mask].max()
    assert total > 0  # the search moved the masks
    assert all(torch.equal(weights[name], frozen[name]) for name in weights)


def test_equal_scores_never_swap_and_ties_go_by_index():
    mask = torch.tensor([True, True, False, False, False])
    assert swap_count(torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5]), mask) == 0
    scores = torch.tensor([0.1, 0.2, 0.9, 0.9, 0.9])
    assert swap_count(scores, mask) == 2
    engine = _engine(mask)
    killed, revived = swap_to_top(engine, "w", scores)
    assert killed.tolist() == [0, 1] and revived.tolist() == [2, 3]  # tied dead entries: lower index first
    assert engine.mask("w").tolist() == [False, False, True, True, False]


def test_the_learning_rate_follows_a_cosine_to_zero():
    config = ScoreSearchConfig(lr=2.0)
    assert config.learning_rate(0, 10) == 2.0
    assert config.learning_rate(5, 10) == pytest.approx(1.0)
    assert config.learning_rate(10, 10) == pytest.approx(0.0)


@pytest.mark.parametrize("field, value", [("lr", 0.0), ("momentum", 1.0), ("weight_decay", -1.0), ("score_gap", 0.0),
                                          ("score_gap", 1.0)])
def test_bad_search_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field.replace("_", " ").split()[0]):
        ScoreSearchConfig(**{field: value})


def test_straight_through_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        straight_through(torch.ones(3), torch.ones(4, dtype=torch.bool))
