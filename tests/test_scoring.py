import pytest
import torch

from gnnprune.copruning import EDGES, FEATURES, CoPruner, EdgeRanking, FeatureScore, PruneTargets
from gnnprune.features import NodeFeatures
from gnnprune.masks import lowest
from gnnprune.nn import GCN
from gnnprune.scoring import endpoint_rank
from helpers import tiny_graph

# a star 0-{1, 2, 3} and a tail 3-4; edge (3, 4) has the lowest score of all
STAR_EDGES = torch.tensor([[0, 0, 0, 3],
                           [1, 2, 3, 4]])
STAR_SCORES = torch.tensor([0.1, 0.2, 0.3, 0.05])


def test_endpoint_rank_orders_by_mean_percentile_at_both_ends():
    # percentiles at node 0: 1/3, 2/3, 1; node 3: (3,4) 1/2, (0,3) 1; leaves: 1
    # means: (0,1) 2/3, (0,2) 5/6, (0,3) 1, (3,4) 3/4
    ranks = endpoint_rank(STAR_EDGES, 5, STAR_SCORES, torch.ones(4, dtype=torch.bool))
    assert ranks.tolist() == [0, 2, 3, 1]
    assert ranks.dtype == torch.long


def test_endpoint_rank_ignores_dead_edges_and_breaks_ties_by_global_score():
    live = torch.tensor([False, True, True, True])
    # node 0 now has (0,2) 1/2, (0,3) 1: means (0,2) 3/4, (0,3) 1, (3,4) 3/4 -> tie, (3,4) scores lower
    ranks = endpoint_rank(STAR_EDGES, 5, STAR_SCORES, live)
    assert ranks.tolist() == [-1, 1, 2, 0]


def test_endpoint_rank_with_no_live_edge_and_bad_shapes():
    assert endpoint_rank(STAR_EDGES, 5, STAR_SCORES, torch.zeros(4, dtype=torch.bool)).tolist() == [-1] * 4
    with pytest.raises(ValueError, match="need edges"):
        endpoint_rank(STAR_EDGES, 5, STAR_SCORES[:3], torch.ones(3, dtype=torch.bool))


def test_endpoint_rank_depends_only_on_the_order_of_scores_and_follows_edge_order():
    g = torch.Generator().manual_seed(0)
    n, e = 30, 80
    pairs = torch.randint(0, n, (2, 4 * e), generator=g)
    pairs = pairs[:, pairs[0] < pairs[1]]
    key = torch.unique(pairs[0] * n + pairs[1])[:e]
    edges = torch.stack([key // n, key % n])
    scores = torch.rand(edges.size(1), generator=g)
    live = torch.rand(edges.size(1), generator=g) < 0.8
    ranks = endpoint_rank(edges, n, scores, live)
    assert torch.equal(endpoint_rank(edges, n, scores.exp() * 3 - 1, live), ranks)
    perm = torch.randperm(edges.size(1), generator=g)
    assert torch.equal(endpoint_rank(edges[:, perm], n, scores[perm], live[perm]), ranks[perm])
    assert sorted(ranks[live].tolist()) == list(range(int(live.sum())))


def _ring(n, reach):
    """``n`` nodes on a ring, each joined to the ``reach`` nearest on either side."""
    u = torch.arange(n).repeat_interleave(reach)
    v = (u + torch.arange(1, reach + 1).repeat(n)) % n
    return torch.stack([torch.minimum(u, v), torch.maximum(u, v)])


def test_local_ranking_spreads_pruning_where_global_ranking_strips_a_region():
    n = 40
    edges = _ring(n, 2)
    scores = -edges[0].float()  # low everywhere near node n-1: a region the global rule empties
    live = torch.ones(edges.size(1), dtype=torch.bool)
    k = int(0.3 * edges.size(1))
    for rank, isolated in ((scores, True), (endpoint_rank(edges, n, scores, live), False)):
        kill = lowest(rank, live, k)
        keep = live.clone()
        keep[kill] = False
        degree = torch.bincount(edges[:, keep].reshape(-1), minlength=n)
        assert bool((degree == 0).any()) is isolated


def test_lowest_is_exact_for_long_ranks_beyond_float32():
    scores = torch.tensor([2 ** 24 + 1, 2 ** 24], dtype=torch.long)  # equal once cast to float32
    assert lowest(scores, torch.ones(2, dtype=torch.bool), 1).tolist() == [1]


@pytest.mark.parametrize("ranking", list(EdgeRanking))
def test_update_prunes_the_edges_its_ranking_names(ranking):
    data = tiny_graph(num_features=4)
    torch.manual_seed(0)
    pruner = CoPruner(GCN(4, 5, 2, dropout=0.0), data)
    scores = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    pruner.update(PruneTargets(edges=3 / 7), prune_scores={EDGES: scores}, edge_ranking=ranking)
    live = torch.ones(7, dtype=torch.bool)
    order = scores if ranking is EdgeRanking.GLOBAL else endpoint_rank(data.edges.edges, 6, scores, live)
    expected = torch.ones(7, dtype=torch.bool)
    expected[lowest(order, live, 3)] = False
    assert torch.equal(pruner.engine.mask(EDGES), expected)
    assert pruner.kept_edges() == 4

    # global takes edges 0, 1, 2 and strands nodes 0 and 1; local takes 0, 1 and 4
    assert torch.equal(~expected, torch.tensor([1, 1, 1, 0, 0, 0, 0] if ranking is EdgeRanking.GLOBAL
                                                else [1, 1, 0, 0, 1, 0, 0], dtype=torch.bool))


def _feature_pruner(gates: bool = False):
    data = tiny_graph(num_features=3)
    # feature 0: one node, weight row norm 2; feature 1: all six nodes, norm 1; feature 2: three nodes, norm 1.5
    x = torch.zeros(6, 3)
    x[0, 0] = 1.0
    x[:, 1] = torch.tensor([1.0, -1, 1, 1, -1, 1])
    x[:3, 2] = 2.0
    data.x = x
    torch.manual_seed(0)
    model = GCN(3, 4, 2, dropout=0.0)
    with torch.no_grad():
        rows = torch.tensor([2.0, 1.0, 1.5])
        w = model.convs[0].lin.weight
        w.copy_(w / w.norm(dim=1, keepdim=True) * rows[:, None])
    return CoPruner(model, data, learn_edge_weights=True, learn_feature_gates=gates)


@pytest.mark.parametrize("sparse", [True, False])
def test_column_l1_is_the_same_for_sparse_and_dense_storage(sparse):
    x = torch.tensor([[0.0, -2.0, 0.0], [1.5, 0.0, 0.0], [0.0, 3.0, 0.0]])
    assert NodeFeatures(x, sparse=sparse).column_l1.tolist() == [1.5, 5.0, 0.0]


def test_feature_contribution_is_column_mass_times_gate_times_row_norm():
    pruner = _feature_pruner(gates=True)
    with torch.no_grad():
        pruner.feature_gate.copy_(torch.tensor([0.5, -2.0, 1.0]))
    assert torch.allclose(pruner.feature_magnitude(), torch.tensor([1.0, 2.0, 1.5]))
    assert torch.allclose(pruner.feature_contribution(), torch.tensor([1.0 * 1.0, 6 * 2.0, 6 * 1.5]))


@pytest.mark.parametrize("score, killed", [(FeatureScore.MAGNITUDE, 1), (FeatureScore.CONTRIBUTION, 0)])
def test_feature_score_decides_which_column_goes(score, killed):
    pruner = _feature_pruner()
    pruner.update(PruneTargets(features=1 / 3), feature_score=score)
    expected = torch.ones(3, dtype=torch.bool)
    expected[killed] = False
    assert torch.equal(pruner.engine.mask(FEATURES), expected)
    assert torch.all(pruner.model.convs[0].lin.weight[killed] == 0)
