"""Structured co-pruning of hidden units (``WeightGranularity.UNIT``)."""
import pytest
import torch
import torch.nn.functional as F

from gnnprune.copruning import FEATURES, UNIT_PREFIX, CoPruner, PruneTargets, WeightGranularity
from gnnprune.macs import gcn_operator_entries
from gnnprune.masks import WeightDistribution, kept_count
from gnnprune.nn import GCN, UnitRole, build_model
from gnnprune.nn.resgcn import LiveLayerNorm
from gnnprune.schedules import CubicSparsity
from helpers import tiny_graph

UNIT = WeightGranularity.UNIT
NUM_FEATURES, NUM_CLASSES, HIDDEN = 6, 3, 8
#: model -> (constructor overrides, class-output weight, class-output bias)
ZOO = {
    "gcn": ({}, "convs.1.lin.weight", "convs.1.bias"),
    "gat": ({"heads": 2, "hidden_channels": 4}, "convs.1.lin.weight", "convs.1.bias"),
    "sage": ({}, "convs.1.lin_root.weight", "convs.1.bias"),
    "appnp": ({"K": 2}, "lins.1.weight", "lins.1.bias"),
    "sgc": ({}, "lin.weight", "lin.bias"),
    "gcn2": ({"num_layers": 3}, "lin_out.weight", "lin_out.bias"),
    "resgcn": ({"num_layers": 3}, "lin_out.weight", "lin_out.bias"),
}


def _model(name, seed=0, **overrides):
    torch.manual_seed(seed)
    options = {"hidden_channels": HIDDEN, "dropout": 0.0, **ZOO[name][0], **overrides}
    return build_model(name, NUM_FEATURES, NUM_CLASSES, **options)


def _loss(data):
    return lambda logits: F.cross_entropy(logits[data.train_mask], data.y[data.train_mask])


def _train_steps(model, pruner, data, optimizer, steps=3):
    loss_fn = _loss(data)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(model(pruner.inputs(), pruner.graph())).backward()
        pruner.mask_gradients()
        optimizer.step()
        pruner.apply_weight_masks()


def _scores(pruner, group, dead):
    """Prune scores of every site (by index), those of ``group`` putting exactly ``dead`` (unit indices) lowest."""
    scores = {site.name: torch.arange(site.numel, dtype=torch.float) for site in pruner.engine}
    units = torch.arange(pruner.unit_groups[group].size, dtype=torch.float) + 10
    units[list(dead)] = torch.arange(len(dead), dtype=torch.float)
    return {**scores, UNIT_PREFIX + group: units}


def _unit_slice(tensor, piece, unit):
    """The sub-tensor of ``unit`` in ``piece`` (a column, a row, an entry ...)."""
    flat = tensor.movedim(piece.dims, tuple(range(len(piece.dims))))
    return flat.reshape(-1, *flat.shape[len(piece.dims):])[unit]


def test_gcn_unit_prunes_column_bias_and_next_row_and_they_stay_zero_through_training():
    data = tiny_graph(num_features=NUM_FEATURES)
    model = _model("gcn")
    pruner = CoPruner(model, data, weight_granularity=UNIT)
    assert list(pruner.unit_groups) == ["convs.0"]
    pruner.update(PruneTargets(weights=0.25), prune_scores=_scores(pruner, "convs.0", [1, 6]))
    assert pruner.unit_mask("convs.0").tolist() == [True, False, True, True, True, True, False, True]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, weight_decay=5e-4)
    _train_steps(model, pruner, data, optimizer)
    w0, b0, w1 = model.convs[0].lin.weight, model.convs[0].bias, model.convs[1].lin.weight
    for unit in (1, 6):
        assert torch.all(w0[:, unit] == 0) and b0[unit] == 0 and torch.all(w1[unit] == 0)
    live = [0, 2, 3, 4, 5, 7]
    assert torch.all(w0[:, live] != 0) and torch.all(b0[live] != 0) and torch.all(w1[live] != 0)
    assert torch.all(model.convs[1].bias != 0)  # class outputs untouched
    hidden = model.convs[0](pruner.inputs(), pruner.graph())
    assert torch.all(hidden[:, [1, 6]] == 0)  # the unit's output is identically zero
    assert pruner.kept_weights() == {"convs.0.lin.weight": 6 * 6, "convs.1.lin.weight": 6 * 3}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_class_outputs_are_never_pruned(name):
    data = tiny_graph(num_features=NUM_FEATURES)
    model = _model(name)
    pruner = CoPruner(model, data, weight_granularity=UNIT)
    _, out_weight, out_bias = ZOO[name]
    for group in pruner.unit_groups.values():
        for piece in group.slices:
            assert not (piece.param == out_weight and piece.dims == (1,)) and piece.param != out_bias
    targets = PruneTargets(weights=0.75 if pruner.unit_groups else 0.0, features=0.5)  # 2 of 8 units live
    pruner.update(targets, prune_scores={s.name: torch.rand(s.mask.shape) for s in pruner.engine})
    assert out_bias not in pruner.masked_params
    assert torch.all(pruner.weight_mask(out_weight).any(dim=0))  # every class column keeps live weights
    logits = model.eval()(pruner.inputs(), pruner.graph())
    assert torch.all(logits.std(dim=0) > 0)


@pytest.mark.parametrize("name", [n for n in sorted(ZOO) if n != "sgc"])
def test_exact_unit_counts_along_a_schedule_and_every_slice_of_a_dead_unit_is_zero(name):
    data = tiny_graph(num_features=NUM_FEATURES)
    model = _model(name, num_layers=3)
    pruner = CoPruner(model, data, weight_granularity=UNIT)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    schedule = CubicSparsity(0.0, 0.75, 0, 4)
    loss_fn = _loss(data)
    for step in range(5):
        target = schedule(step)
        pruner.update(PruneTargets(weights=target, features=0.3), 0.3, pruner.probe(loss_fn), optimizer)
        _train_steps(model, pruner, data, optimizer, steps=2)
        for group_name, group in pruner.unit_groups.items():
            assert pruner.unit_mask(group_name).sum() == kept_count(group.size, target)
    params = dict(model.named_parameters())
    for group_name, group in pruner.unit_groups.items():
        mask = pruner.unit_mask(group_name)
        for piece in group.slices:
            for unit in (~mask).nonzero().view(-1).tolist():
                assert torch.all(_unit_slice(params[piece.param], piece, unit) == 0), (piece, unit)
    report = pruner.sparsity_report()
    assert report["units"] == pytest.approx(1 - sum(kept_count(g.size, 0.75) for g in pruner.unit_groups.values())
                                            / sum(g.size for g in pruner.unit_groups.values()))
    assert 0 < report["weights"] < 1


def test_regrowth_revives_exactly_n_units_with_fresh_producers_zero_consumers_and_reset_state():
    data = tiny_graph(num_features=NUM_FEATURES)
    model = _model("gcn")
    pruner = CoPruner(model, data, weight_granularity=UNIT)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    loss_fn = _loss(data)
    pruner.update(PruneTargets(weights=0.5), prune_scores=_scores(pruner, "convs.0", [0, 1, 2, 3]))
    _train_steps(model, pruner, data, optimizer)
    with torch.no_grad():
        for p in model.parameters():
            optimizer.state[p]["exp_avg"].add_(1.0)  # make resets observable
    before = pruner.unit_mask("convs.0").clone()
    report = pruner.update(PruneTargets(weights=0.5), 0.5, pruner.probe(loss_fn), optimizer)
    after = pruner.unit_mask("convs.0")
    assert report[UNIT_PREFIX + "convs.0"] == {"pruned": 0, "swapped_out": 2, "grown": 2}
    assert int(after.sum()) == 4
    grown = (after & ~before).nonzero().view(-1).tolist()
    assert grown == [0, 1]  # a dead unit has zero gradient everywhere: ties go to the lowest index
    w0, b0, w1 = model.convs[0].lin.weight, model.convs[0].bias, model.convs[1].lin.weight
    bound = (6.0 / (NUM_FEATURES + HIDDEN)) ** 0.5
    for unit in grown:
        assert torch.all(w0[:, unit] != 0) and torch.all(w0[:, unit].abs() <= bound)
        assert b0[unit] == 0 and torch.all(w1[unit] == 0)
        assert torch.all(optimizer.state[w0]["exp_avg"][:, unit] == 0)
        assert torch.all(optimizer.state[w1]["exp_avg"][unit] == 0)
        assert optimizer.state[b0]["exp_avg"][unit] == 0
    kept = (after & before).nonzero().view(-1)
    assert torch.all(optimizer.state[w0]["exp_avg"][:, kept] != 0)


def test_regrown_unit_leaves_the_output_unchanged_and_then_trains():
    data = tiny_graph(num_features=NUM_FEATURES)
    model = _model("gcn")
    pruner = CoPruner(model, data, weight_granularity=UNIT)
    pruner.update(PruneTargets(weights=0.5), prune_scores=_scores(pruner, "convs.0", [0, 1, 2, 3]))
    model.eval()
    before = model(pruner.inputs(), pruner.graph())
    mask = pruner.unit_mask("convs.0").clone()
    mask[0] = True
    pruner.engine.set_mask(UNIT_PREFIX + "convs.0", mask)
    with torch.no_grad():
        pruner._revive_units(pruner.unit_groups["convs.0"], torch.tensor([0]), None)
    pruner.refresh()
    assert torch.equal(model(pruner.inputs(), pruner.graph()), before)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    _train_steps(model, pruner, data, optimizer, steps=2)
    assert torch.all(model.convs[1].lin.weight[0] != 0)  # the consumer row learns once the unit is live


@pytest.mark.parametrize("name", ["gcn2", "resgcn"])
def test_residual_partners_are_pruned_together_across_the_stack(name):
    data = tiny_graph(num_features=NUM_FEATURES)
    model = _model(name)
    pruner = CoPruner(model, data, weight_granularity=UNIT)
    assert list(pruner.unit_groups) == ["hidden"]
    pruner.update(PruneTargets(weights=0.25), prune_scores=_scores(pruner, "hidden", [2, 5]))
    _train_steps(model, pruner, data, torch.optim.Adam(model.parameters(), lr=0.1))
    assert torch.all(model.lin_in.weight[:, [2, 5]] == 0) and torch.all(model.lin_in.bias[[2, 5]] == 0)
    layers = model.convs if name == "gcn2" else [block.conv for block in model.blocks]
    for conv in layers:
        assert torch.all(conv.lin.weight[[2, 5]] == 0) and torch.all(conv.lin.weight[:, [2, 5]] == 0)
        assert int((conv.lin.weight != 0).sum()) == 6 * 6
    if name == "resgcn":
        for norm in [block.norm for block in model.blocks] + [model.norm_out]:
            assert torch.all(norm.weight[[2, 5]] == 0) and torch.all(norm.bias[[2, 5]] == 0)
            assert int((norm.weight != 0).sum()) == 6
    assert torch.all(model.lin_out.weight[[2, 5]] == 0)
    streams = []
    hooks = [module.register_forward_hook(lambda m, i, out: streams.append(out))
             for module in ([model.lin_in, *model.convs] if name == "gcn2" else [model.lin_in, *model.blocks])]
    model.eval()(pruner.inputs(), pruner.graph())
    for hook in hooks:
        hook.remove()
    assert all(torch.all(out[:, [2, 5]] == 0) for out in streams)  # the channel is zero through the whole stack


def _compact(name, model, pruner, **overrides):
    """The model built at the live width with the live units' slices copied in."""
    [(group_name, group)] = pruner.unit_groups.items()
    live = pruner.unit_mask(group_name).nonzero().view(-1)
    small = _model(name, hidden_channels=live.numel(), **overrides)
    slices = {}
    for piece in group.slices:
        slices.setdefault(piece.param, []).append(piece.dims)
    state = {}
    for key, value in model.state_dict().items():
        for dims in slices.get(key, []):
            value = value.index_select(dims[0], live)
        if key.endswith(("running_mean", "running_var")):  # BatchNorm statistics follow the affine entries
            value = value[live]
        state[key] = value
    small.load_state_dict(state)
    return small


@pytest.mark.parametrize("name, overrides", [("gcn", {}), ("sage", {}), ("appnp", {}), ("gcn2", {}),
                                             ("resgcn", {}), ("resgcn", {"norm": "batch"})])
def test_a_model_with_pruned_units_equals_the_narrower_model(name, overrides):
    data = tiny_graph(num_features=NUM_FEATURES)
    model = _model(name, **overrides)
    pruner = CoPruner(model, data, weight_granularity=UNIT)
    _train_steps(model, pruner, data, torch.optim.Adam(model.parameters(), lr=0.05))
    group = next(iter(pruner.unit_groups))
    pruner.update(PruneTargets(weights=0.375), prune_scores=_scores(pruner, group, [0, 3, 6]))
    _train_steps(model, pruner, data, torch.optim.Adam(model.parameters(), lr=0.05))
    small = _compact(name, model, pruner, **overrides)
    x, graph = pruner.inputs(), pruner.graph()
    assert torch.allclose(model.eval()(x, graph), small.eval()(x, graph), atol=1e-5)


def test_gat_units_are_channels_of_a_head_and_a_head_without_channels_is_gone():
    data = tiny_graph(num_features=NUM_FEATURES)
    model = _model("gat")  # 2 heads x 4 channels
    pruner = CoPruner(model, data, weight_granularity=UNIT)
    assert pruner.unit_groups["convs.0"].size == 8
    pruner.update(PruneTargets(weights=0.625), prune_scores=_scores(pruner, "convs.0", [4, 5, 6, 7, 1]))
    conv = model.convs[0]
    assert torch.all(conv.att_src[1] == 0) and torch.all(conv.att_dst[1] == 0) and conv.att_src[0, 1] == 0
    assert int((conv.att_src != 0).sum()) == 3
    h = conv(pruner.inputs(), pruner.graph())
    assert torch.all(h[:, [1, 4, 5, 6, 7]] == 0)
    rows = model.macs(data.num_nodes, pruner.kept_edges(), pruner.kept_weights(), pruner.live_units())
    entries = gcn_operator_entries(pruner.kept_edges(), data.num_nodes)
    assert rows[0]["aggregation"] == entries * 3 + entries * 1  # 3 live channels in 1 live head


def test_gcn_macs_count_the_live_width():
    data = tiny_graph(num_features=NUM_FEATURES)
    model = _model("gcn")
    pruner = CoPruner(model, data, weight_granularity=UNIT)
    pruner.update(PruneTargets(weights=0.75, features=0.5), prune_scores=_scores(pruner, "convs.0", range(6)))
    n, entries = data.num_nodes, gcn_operator_entries(pruner.kept_edges(), data.num_nodes)
    rows = model.macs(n, pruner.kept_edges(), pruner.kept_weights(), pruner.live_units())
    assert rows == [{"layer": "convs.0", "transform": 3 * 2 * n, "aggregation": entries * 2},
                    {"layer": "convs.1", "transform": 2 * 3 * n, "aggregation": entries * 2}]
    assert model.macs(n, pruner.kept_edges(), pruner.kept_weights())[1]["aggregation"] == entries * 3


def test_live_layer_norm_is_layer_norm_over_the_live_channels():
    torch.manual_seed(0)
    norm = LiveLayerNorm(5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(4, 5)
    assert torch.equal(norm(x), F.layer_norm(x, (5,), norm.weight, norm.bias, norm.eps))
    with torch.no_grad():
        norm.weight[[1, 3]] = 0
        norm.bias[[1, 3]] = 0
    live = [0, 2, 4]
    out = norm(x)
    assert torch.all(out[:, [1, 3]] == 0)
    expected = F.layer_norm(x[:, live], (3,), norm.weight[live], norm.bias[live], norm.eps)
    assert torch.allclose(out[:, live], expected, atol=1e-6)


def test_models_without_hidden_units_refuse_a_unit_target():
    data = tiny_graph(num_features=NUM_FEATURES)
    for model in (_model("sgc"), _model("gcn", num_layers=1)):
        pruner = CoPruner(model, data, weight_granularity=UNIT)
        assert pruner.unit_groups == {} and pruner.live_units() == {}
        pruner.update(PruneTargets(edges=0.3, features=0.5), prune_scores={"edges": torch.rand(7)})
        assert pruner.engine.site(FEATURES).live == 3
        with pytest.raises(ValueError, match="has no hidden units"):
            pruner.update(PruneTargets(weights=0.5), prune_scores={"edges": torch.rand(7)})


def test_unit_mode_takes_the_uniform_distribution_only():
    data = tiny_graph(num_features=NUM_FEATURES)
    with pytest.raises(ValueError, match="same fraction of every unit group"):
        CoPruner(_model("gcn"), data, weight_granularity=UNIT, weight_distribution=WeightDistribution.ERK)


def test_regrown_values_follow_the_role():
    from gnnprune.copruning import regrown_value

    weight = torch.zeros(6, 10)
    fresh = regrown_value(UnitRole.PRODUCER, weight)
    bound = (6.0 / (6 + 10)) ** 0.5
    assert fresh.shape == weight.shape and torch.all(fresh.abs() <= bound) and fresh.std() > bound / 4
    assert regrown_value(UnitRole.CONSUMER, weight) == 0.0
    assert regrown_value(UnitRole.BIAS, weight) == 0.0
    assert regrown_value(UnitRole.SCALE, weight) == 1.0
    assert regrown_value(UnitRole.SHIFT, weight) == 0.0


def test_unit_state_round_trips_and_masks_survive_a_reload():
    data = tiny_graph(num_features=NUM_FEATURES)
    model = GCN(NUM_FEATURES, HIDDEN, NUM_CLASSES, num_layers=3, dropout=0.0)
    pruner = CoPruner(model, data, weight_granularity=UNIT)
    pruner.update(PruneTargets(weights=0.5), prune_scores={s.name: torch.rand(s.mask.shape) for s in pruner.engine})
    state = pruner.state_dict()
    other = CoPruner(GCN(NUM_FEATURES, HIDDEN, NUM_CLASSES, num_layers=3, dropout=0.0), data, weight_granularity=UNIT)
    other.load_state_dict(state)
    for group in ("convs.0", "convs.1"):
        assert torch.equal(other.unit_mask(group), pruner.unit_mask(group))
    assert other.kept_weights() == pruner.kept_weights()
