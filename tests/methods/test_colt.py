"""COLT on graphs: intersections of known masks, rewinding, exact counts, the CLI."""
import json

import pytest
import torch

from gnnprune.cli import main
from gnnprune.copruning import EDGES, FEATURES, WEIGHT_PREFIX, CoPruner, EdgeRanking, PruneTargets
from gnnprune.data.synthetic import CSBMConfig, csbm
from gnnprune.masks import kept_count
from gnnprune.methods import UGSConfig, fit_colt, fit_colt_levels
from gnnprune.methods.colt import ClassSubset, class_half_data, class_halves, head_weights, intersect, rewind
from gnnprune.nn import GCN
from gnnprune.training import TrainConfig

T, F = True, False
INF = float("inf")


@pytest.fixture(scope="module")
def four_classes():
    return csbm(CSBMConfig(num_nodes=240, num_classes=4, num_features=16, avg_degree=5, homophily=0.85, signal=1.5,
                           train_per_class=10, num_val=60, num_test=100, seed=2))


def test_intersection_of_two_known_masks_keeps_the_common_entries_first():
    keeps = [{"a": torch.tensor([T, T, F, T, F])}, {"a": torch.tensor([T, F, T, T, F])}]
    scores = [{"a": torch.tensor([5.0, 4.0, 1.0, 3.0, 0.5])}, {"a": torch.tensor([6.0, 2.0, 3.0, 1.0, 0.0])}]
    merged = intersect(keeps, scores, owners={})
    assert torch.equal(merged["a"], torch.tensor([INF, 3.0, 2.0, INF, 0.25]))


def test_a_head_site_takes_its_owners_scores_and_is_not_intersected():
    keeps = [{"h": torch.tensor([[T, F], [F, F]])}, {"h": torch.tensor([[F, F], [F, T]])}]
    scores = [{"h": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}, {"h": torch.tensor([[10.0, 20.0], [30.0, 40.0]])}]
    owners = {"h": torch.tensor([[0, 1], [0, 1]])}  # column 0 belongs to copy 0, column 1 to copy 1
    assert torch.equal(intersect(keeps, scores, owners)["h"], torch.tensor([[1.0, 20.0], [3.0, 40.0]]))


def test_pruning_by_the_intersection_scores_keeps_it_and_tops_up_to_the_exact_count():
    data = csbm(CSBMConfig(num_nodes=60, num_classes=2, num_features=10, num_val=10, num_test=10, seed=0))
    torch.manual_seed(0)
    pruner = CoPruner(GCN(data.num_features, 4, data.num_classes, dropout=0.0), data)
    edges = data.edges.num_edges
    g = torch.Generator().manual_seed(0)
    keep_a = torch.zeros(edges, dtype=torch.bool)
    keep_b = torch.zeros(edges, dtype=torch.bool)
    keep_a[torch.randperm(edges, generator=g)[: edges // 2]] = True
    keep_b[torch.randperm(edges, generator=g)[: edges // 2]] = True
    both = keep_a & keep_b
    assert 0 < int(both.sum()) < edges // 2
    mean = torch.rand(edges, generator=g)
    merged = intersect([{EDGES: keep_a}, {EDGES: keep_b}], [{EDGES: mean}, {EDGES: mean}], owners={})
    pruner.update(PruneTargets(edges=0.5), prune_scores={EDGES: merged[EDGES], FEATURES: torch.ones(10)},
                  edge_ranking=EdgeRanking.GLOBAL)
    kept = pruner.engine.mask(EDGES)
    assert int(kept.sum()) == kept_count(edges, 0.5)
    assert bool((kept | ~both).all())  # the intersection survives
    topped = kept & ~both  # the rest: the highest of the others
    assert float(mean[topped].min()) >= float(mean[~kept & ~both].max())


def test_rewound_weights_equal_their_initial_values_bit_for_bit(four_classes):
    torch.manual_seed(3)
    model = GCN(four_classes.num_features, 8, four_classes.num_classes, dropout=0.0)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = CoPruner(model, four_classes)
    pruner.update(PruneTargets(weights=0.6), prune_scores={EDGES: torch.ones(four_classes.edges.num_edges)},
                  edge_ranking=EdgeRanking.GLOBAL)
    masks = pruner.engine.state_dict()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # training moved every weight
    rewound = rewind(model, four_classes, initial, masks)
    for name, param in model.prunable_weights().items():
        live = rewound.weight_mask(name)
        assert torch.equal(param.detach()[live], initial[name][live])
        assert bool((param.detach()[~live] == 0).all())
    for name, value in model.state_dict().items():
        if name not in model.prunable_weights():
            assert torch.equal(value, initial[name])


def test_class_halves_and_the_copies_views(four_classes):
    first, second = class_halves(4)
    assert first.tolist() == [0, 1] and second.tolist() == [2, 3]
    assert [h.tolist() for h in class_halves(7)] == [[0, 1, 2], [3, 4, 5, 6]]
    half = class_half_data(four_classes, second)
    assert half.num_classes == 2
    assert bool(torch.isin(four_classes.y[half.train_mask], second).all())
    assert int(half.train_mask.sum()) == int(torch.isin(four_classes.y[four_classes.train_mask], second).sum())
    assert torch.equal(half.y[half.train_mask], four_classes.y[half.train_mask] - 2)
    model = GCN(four_classes.num_features, 8, four_classes.num_classes, dropout=0.0)
    view = ClassSubset(model, second)
    assert list(view.prunable_weights()) == list(model.prunable_weights())
    pruner = CoPruner(model, four_classes)
    model.eval()
    assert torch.equal(view(pruner.inputs(), pruner.graph()), model(pruner.inputs(), pruner.graph())[:, 2:])
    assert head_weights(model, 4) == list(model.prunable_weights())[-1:]


def test_colt_ends_every_round_at_the_exact_counts_and_records_the_top_ups(four_classes):
    torch.manual_seed(0)
    model = GCN(four_classes.num_features, 8, four_classes.num_classes, dropout=0.0)
    targets = PruneTargets(weights=0.5, edges=0.1, features=0.3)
    config = UGSConfig(round_epochs=3)
    fitted = fit_colt(model, four_classes, targets, config, TrainConfig(epochs=5, seed=0), progress=False)
    schedule = config.schedule(targets)
    rounds = fitted.result.updates
    assert len(rounds) == len(schedule)
    assert fitted.result.epochs_run == 2 * 3 * len(schedule) + 3  # both copies every round, then the ticket
    for entry, level in zip(rounds, schedule):
        assert [copy_["classes"] for copy_ in entry["copies"]] == [[0, 1], [2, 3]]
        for part in ("edges", "features"):  # the intersection, then the top-up
            counts = entry["intersection"][part]
            assert counts["kept"] - counts["topped_up"] == counts["intersection"] <= counts["kept"]
        counts = entry["intersection"]["weights"]  # less rows of features pruned this round
        assert counts["kept"] - counts["topped_up"] <= counts["intersection"]
        assert entry["targets"] == vars(level)
    engine = fitted.pruner.engine
    assert engine.site(EDGES).live == kept_count(four_classes.edges.num_edges, 0.1)
    assert engine.site(FEATURES).live == kept_count(four_classes.num_features, 0.3)
    for name, param in model.prunable_weights().items():
        assert engine.site(WEIGHT_PREFIX + name).live == kept_count(param.numel(), 0.5)


def test_colt_levels_share_one_trajectory_and_match_a_single_run(four_classes):
    levels = [PruneTargets(weights=0.3, edges=0.1, features=0.2), PruneTargets(weights=0.6, edges=0.2, features=0.4)]
    config = UGSConfig(round_epochs=2)
    train_config = TrainConfig(epochs=3, seed=0)
    torch.manual_seed(0)
    model = GCN(four_classes.num_features, 8, four_classes.num_classes, dropout=0.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    shared = fit_colt_levels(model, four_classes, levels, config, train_config, progress=False)
    rounds = [len(s) for s in config.level_schedules(levels)]
    assert [len(f.result.updates) for f in shared] == [rounds[0], rounds[0] + rounds[1]]
    # both copies in every round up to the level, then the level's own ticket (round_epochs each)
    assert [f.result.epochs_run for f in shared] == [2 * 2 * rounds[0] + 2, 2 * 2 * sum(rounds) + 2]
    for fitted, level in zip(shared, levels):
        engine = fitted.pruner.engine
        assert engine.site(EDGES).live == kept_count(four_classes.edges.num_edges, level.edges)
        assert engine.site(FEATURES).live == kept_count(four_classes.num_features, level.features)
    model.load_state_dict(state)
    alone = fit_colt(model, four_classes, levels[0], config, train_config, progress=False)
    assert alone.result.test == shared[0].result.test
    assert all(torch.equal(a.mask, b.mask) for a, b in zip(alone.pruner.engine, shared[0].pruner.engine))


def test_cli_runs_colt(tmp_path):
    out = tmp_path / "colt"
    assert main(["prune", "--dataset", "synthetic:num_nodes=300,num_classes=4,num_features=20,num_val=60,num_test=120",
                 "--method", "colt", "--weight-sparsity", "0.5", "--edge-sparsity", "0.1", "--feature-sparsity", "0.2",
                 "--epochs", "4", "--hidden", "16", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    run = record["runs"][0]
    assert record["config"]["method"] == "colt"
    assert run["sparsity"]["weights"] == pytest.approx(0.5, abs=1e-2)
    assert run["sparsity"]["edges"] == pytest.approx(0.1, abs=1e-2)
    assert run["epochs"] == 2 * 4 * 4 + 4  # 4 rounds (weights at rate 0.2), both copies, then the ticket
    seed = json.loads((out / "seed-0" / "metrics.json").read_text())
    assert [sorted(entry["intersection"]) for entry in seed["mask_updates"]] == [
        ["edges", "features", "head", "weights"]] * 4


def test_the_head_is_the_trailing_run_of_class_output_weights():
    from gnnprune.nn import build_model

    gat = build_model("gat", 20, 7, 16, 2, 0.5)
    assert head_weights(gat, 7) == ["convs.1.att_src", "convs.1.att_dst", "convs.1.lin.weight"]
    sage = build_model("sage", 20, 7, 16, 2, 0.5)
    assert head_weights(sage, 7) == ["convs.1.lin_root.weight", "convs.1.lin_neigh.weight"]
    with pytest.raises(ValueError, match="cannot be told apart"):
        head_weights(GCN(20, 7, 7), 7)
