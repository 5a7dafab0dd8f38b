import pytest
import torch

from gnnprune.graph import EdgeSet
from gnnprune.loader import MiniBatchConfig, RankShare, neighbor_batches, random_node_batches
from helpers import tiny_graph


def test_random_node_batches_are_induced_subgraphs_of_the_pool():
    data = tiny_graph()
    pool = torch.tensor([0, 1, 2, 3, 4, 6])  # edge 5 = (3, 5) is pruned
    batches = list(random_node_batches(data.edges, pool, MiniBatchConfig(3), torch.Generator().manual_seed(0)))
    assert len(batches) == 2
    assert sorted(torch.cat([b.nodes for b in batches]).tolist()) == list(range(6))
    part = torch.empty(6, dtype=torch.long)
    for p, b in enumerate(batches):
        part[b.nodes] = p
        assert torch.equal(b.nodes, b.nodes.sort().values)
        # local edges map back to the global edges they stand for
        assert torch.equal(b.nodes[b.edges.edges], data.edges.edges[:, b.edge_ids])
    u, v = data.edges.edges[:, pool]
    expected = pool[part[u] == part[v]].sort().values
    assert torch.equal(torch.cat([b.edge_ids for b in batches]).sort().values, expected)
    assert 5 not in torch.cat([b.edge_ids for b in batches]).tolist()


def _star_and_path():
    # hub 0 joined to 1..8; a path 8 - 9 - 10 - 11
    u = torch.tensor([0] * 8 + [8, 9, 10])
    v = torch.tensor(list(range(1, 9)) + [9, 10, 11])
    return EdgeSet(torch.stack([u, v]), 12)


def test_neighbor_batches_sample_exactly_the_fanout_over_pool_edges_only():
    edges = _star_and_path()
    pool = torch.tensor([e for e in range(11) if e != 3])  # edge 3 = (0, 4) is pruned
    batching = MiniBatchConfig(batch_size=2, loader="neighbors", fanouts=(3, 2))
    batches = list(neighbor_batches(edges, pool, batching, torch.Generator().manual_seed(0)))
    assert len(batches) == 6
    seeds = torch.cat([b.nodes[b.loss_nodes] for b in batches])
    assert sorted(seeds.tolist()) == list(range(12))  # every node is a seed once per epoch
    for b in batches:
        assert torch.equal(b.nodes, b.nodes.sort().values)
        assert torch.equal(b.nodes[b.edges.edges], edges.edges[:, b.edge_ids])
        assert 3 not in b.edge_ids.tolist()
        assert set(b.edge_ids.tolist()) <= set(pool.tolist())
        # every batch node is a seed or was reached through a sampled edge
        touched = set(b.nodes[b.loss_nodes].tolist()) | set(edges.edges[:, b.edge_ids].view(-1).tolist())
        assert set(b.nodes.tolist()) == touched
    hub_batch = next(b for b in batches if 0 in b.nodes[b.loss_nodes].tolist())
    hub_edges = [e for e in hub_batch.edge_ids.tolist() if e < 8]
    assert len(hub_edges) >= 3  # the hub draws min(3, 7) of its kept edges (more may come from its leaves)


def test_neighbor_sampling_takes_every_edge_when_the_fanout_covers_the_degree_and_is_uniform_otherwise():
    edges = _star_and_path()
    pool = torch.arange(11)
    whole = MiniBatchConfig(batch_size=12, loader="neighbors", fanouts=(8, 8, 8, 8))
    (batch,) = neighbor_batches(edges, pool, whole, torch.Generator().manual_seed(0))
    assert torch.equal(batch.edge_ids.sort().values, pool) and batch.nodes.numel() == 12
    one_hop = MiniBatchConfig(batch_size=2, loader="neighbors", fanouts=(1,))
    generator = torch.Generator().manual_seed(1)
    star = EdgeSet(edges.edges[:, :8], 9)
    counts = torch.zeros(8)
    draws = 3000
    for _ in range(draws):
        for batch in neighbor_batches(star, torch.arange(8), one_hop, generator):
            seeds = batch.nodes[batch.loss_nodes].tolist()
            if 0 in seeds and len(seeds) == 1:  # the hub alone: its one draw among 8 edges
                assert batch.edge_ids.numel() == 1
                counts[batch.edge_ids] += 1
    assert 200 < counts.sum() < 500  # the hub is alone in the last (odd) batch one time in nine
    assert torch.allclose(counts / counts.sum(), torch.full((8,), 1 / 8), atol=0.05)


def _epoch(loader, edges, pool, batching, share, seed=0):
    generator = torch.Generator().manual_seed(seed)
    batches = list(loader(edges, pool, batching, generator, share))
    return batches, generator.get_state()


def test_ranks_deal_whole_random_node_parts_and_a_filler_of_weight_zero():
    data = tiny_graph()
    pool = torch.arange(data.edges.num_edges)
    batching = MiniBatchConfig(2)  # 6 nodes: 3 parts for 2 ranks
    whole, state = _epoch(random_node_batches, data.edges, pool, batching, RankShare())
    ranks = [_epoch(random_node_batches, data.edges, pool, batching, RankShare(r, 2)) for r in range(2)]
    assert [len(batches) for batches, _ in ranks] == [2, 2]  # ceil(3 parts / 2 ranks) steps each
    assert all(generator.equal(state) for _, generator in ranks)  # every rank's generator stays in step
    (first, _), (second, _) = ranks
    for part, batch in zip(whole, [first[0], second[0], first[1]]):  # step s deals parts 2s, 2s + 1
        assert batch.weight == 1.0 and batch.nodes.equal(part.nodes) and batch.edge_ids.equal(part.edge_ids)
    assert second[1].weight == 0.0  # no fourth part: rank 1 repeats one with weight 0
    assert all(batch.weight == 1.0 for batch in whole)


def test_ranks_split_each_neighbor_batch_seeds_and_weigh_them_by_their_share():
    edges = _star_and_path()
    pool = torch.arange(11)
    batching = MiniBatchConfig(batch_size=5, loader="neighbors", fanouts=(2, 2))  # 12 seeds: 5, 5, 2
    whole, state = _epoch(neighbor_batches, edges, pool, batching, RankShare())
    ranks = [_epoch(neighbor_batches, edges, pool, batching, RankShare(r, 3)) for r in range(3)]
    assert all(len(batches) == len(whole) == 3 for batches, _ in ranks)  # one share of every batch
    assert ranks[0][1].equal(ranks[1][1]) and ranks[1][1].equal(ranks[2][1])  # generators in step
    for step, batch in enumerate(whole):
        shares = [batches[step] for batches, _ in ranks]
        live = [share for share in shares if share.weight > 0]
        seeds = torch.cat([share.nodes[share.loss_nodes] for share in live])
        assert sorted(seeds.tolist()) == sorted(batch.nodes[batch.loss_nodes].tolist())  # a partition
        assert abs(sum(share.weight for share in shares) / 3 - 1.0) < 1e-12
        for share in live:  # weight: W times the share's fraction of the batch's seeds
            assert abs(share.weight - 3 * share.loss_nodes.numel() / batch.loss_nodes.numel()) < 1e-12
    assert [share.weight for share in (batches[2] for batches, _ in ranks)] == [1.5, 1.5, 0.0]


def test_a_rank_share_outside_the_world_is_refused():
    with pytest.raises(ValueError, match="rank must be in 0 .. world_size - 1, got rank 2 of 2"):
        RankShare(2, 2)
