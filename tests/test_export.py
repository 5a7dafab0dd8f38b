import csv
import json

import pytest
import torch

from gnnprune.cli import main
from gnnprune.copruning import UNIT_PREFIX, WEIGHT_PREFIX, CoPruner, WeightGranularity
from gnnprune.export import (ExportError, compact, dense_macs, describe, export_run, kept_graph, load_export_graph,
                             load_exported, max_abs_difference, predict, write_export)
from gnnprune.graph import DirectedEdges, EdgeSet, MaskedGraph
from gnnprune.nn import MODELS, Activation, UnitGroup, UnitRole, UnitSlice, build_model
from gnnprune.runs import load_run
from gnnprune.unit_spaces import dead_units, live_units, remove_units
from helpers import tiny_graph

SMALL = {"gcn2": {"hidden_channels": 16, "num_layers": 4}, "resgcn": {"hidden_channels": 16, "num_layers": 3},
         "gcn": {"hidden_channels": 32}, "sage": {"hidden_channels": 32}, "appnp": {"hidden_channels": 32}}


# unit rules on hand-built tensors ------------------------------------------------------------------------------
PRODUCER, BIAS, CONSUMER = UnitRole.PRODUCER, UnitRole.BIAS, UnitRole.CONSUMER


def _space(activation=Activation.RELU, bias="b", norm=()):
    """Three units: producer ``w_in`` columns, bias ``b``, consumer ``w_out`` rows (and norm ``norm``: scale, shift)."""
    pieces = [UnitSlice("w_in", (1,), PRODUCER), UnitSlice("w_out", (0,), CONSUMER)]
    pieces += [UnitSlice(bias, (0,), BIAS)] if bias is not None else []
    pieces += [UnitSlice(name, (0,), role) for name, role in zip(norm, (UnitRole.SCALE, UnitRole.SHIFT))]
    return UnitGroup(3, tuple(pieces), activation)


def test_a_unit_is_dead_when_silent_or_unread():
    tensors = {"w_in": torch.tensor([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0]]),
               "b": torch.tensor([-0.5, 0.3, 0.7]),
               "w_out": torch.tensor([[1.0], [0.0], [2.0]])}
    # unit 0: no input weight, relu(-0.5) = 0 -> silent; unit 1: read by nothing; unit 2: relu(0.7) > 0 and read
    assert dead_units(_space(), tensors).tolist() == [True, True, False]
    # under ELU a negative bias is not silent (elu(-0.5) != 0); under identity neither
    assert dead_units(_space(Activation.ELU), tensors).tolist() == [False, True, False]
    assert dead_units(_space(Activation.IDENTITY), tensors).tolist() == [False, True, False]
    tensors["b"] = torch.tensor([0.0, 0.3, 0.7])
    assert dead_units(_space(Activation.ELU), tensors).tolist() == [True, True, False]
    # without a bias, unit 2 (no input weight either) is always zero
    assert dead_units(_space(bias=None), {k: v for k, v in tensors.items() if k != "b"}).tolist() == [True, True, True]


def test_a_unit_a_norm_reads_is_never_dead():
    """A norm reads a unit (LayerNorm statistics) unless its scale and shift there are both zero."""
    tensors = {"w_in": torch.tensor([[0.0, 1.0, 0.0]]), "b": torch.zeros(3), "w_out": torch.tensor([[0.0], [0.0], [1.0]]),
               "gamma": torch.tensor([1.0, 0.0, 0.0]), "beta": torch.tensor([0.0, 0.5, 0.0])}
    # unit 0 silent and unread but normalised; unit 1 unread, zero scale but a shift; unit 2 silent, scale and shift 0
    assert dead_units(_space(norm=("gamma", "beta")), tensors).tolist() == [False, False, True]
    assert dead_units(_space(), tensors).tolist() == [True, True, True]


def test_units_over_two_axes_are_tested_per_unit_and_kept_whole():
    """GAT's attention vectors: unit ``u`` of a ``[heads, channels]`` tensor is entry ``divmod(u, channels)``."""
    group = UnitGroup(4, (UnitSlice("w", (1,), PRODUCER), UnitSlice("att", (0, 1), CONSUMER)))
    tensors = {"w": torch.tensor([[1.0, 1.0, 1.0, 1.0]]), "att": torch.tensor([[0.0, 2.0], [3.0, 0.0]])}
    assert dead_units(group, tensors).tolist() == [True, False, False, True]

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w, self.att = torch.nn.Parameter(tensors["w"].clone()), torch.nn.Parameter(tensors["att"].clone())

    layer = Layer()
    keep = live_units(layer, {"h": group})
    assert keep["h"].tolist() == [False, True, True, False]
    with pytest.raises(ValueError, match=r"cannot cut units of group 'h' from att over dims \(0, 1\)"):
        remove_units(layer, {"h": group}, keep)


def test_input_features_die_only_when_unread():
    space = UnitGroup(3, (UnitSlice("w", (0,), CONSUMER), UnitSlice("v", (0,), CONSUMER)))
    tensors = {"w": torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]), "v": torch.tensor([[0.0], [0.0], [3.0]])}
    assert dead_units(space, tensors).tolist() == [True, False, False]


def test_removal_reaches_a_fixed_point():
    """Hidden unit 0 is read by nothing; once it goes, feature 1 (which only fed unit 0) is unread too."""
    class Chain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor([[1.0, 1.0], [5.0, 0.0]]))  # [features, hidden]
            self.b = torch.nn.Parameter(torch.tensor([0.5, 1.0]))
            self.c = torch.nn.Parameter(torch.tensor([[0.0], [1.0]]))  # [hidden, out]

    groups = {"features": UnitGroup(2, (UnitSlice("a", (0,), CONSUMER),)),
              "hidden": UnitGroup(2, (UnitSlice("a", (1,), PRODUCER), UnitSlice("b", (0,), BIAS),
                                      UnitSlice("c", (0,), CONSUMER)), Activation.RELU)}
    chain = Chain()
    keep = live_units(chain, groups)
    assert keep["features"].tolist() == [True, False]
    assert keep["hidden"].tolist() == [False, True]
    assert chain.a[1, 0] == 5.0 and chain.b.tolist() == [0.5, 1.0]  # the model itself is untouched
    remove_units(chain, groups, keep)
    assert chain.a.tolist() == [[1.0]] and chain.b.tolist() == [1.0] and chain.c.tolist() == [[1.0]]


# operators of a directed edge_index ----------------------------------------------------------------------------
def test_directed_edges_give_the_operators_of_the_undirected_graph():
    data = tiny_graph()
    keep = torch.tensor([True, False, True, True, True, False, True])
    selection = data.edges.select(keep)
    weight = torch.tensor([0.5, 2.0, 1.0, 0.25, 3.0])
    directed = DirectedEdges(selection.edge_index, data.num_nodes)
    for op in ("gcn_operator", "mean_operator"):
        expected = getattr(selection, op)(weight).to_dense()
        got = getattr(directed, op)(weight.repeat(2)).to_dense()
        assert torch.allclose(got, expected, atol=1e-7), op
    assert torch.allclose(directed.gcn_operator().to_dense(), selection.gcn_operator().to_dense())


@pytest.mark.parametrize("bad, message", [
    (torch.tensor([[0, 1], [1, 1]]), "self-loops"),
    (torch.tensor([[0, 9], [1, 2]]), "outside [0, 6)"),
    (torch.tensor([0, 1]), "shape [2, E]"),
    (torch.tensor([[0.0], [1.0]]), "integers"),
])
def test_directed_edges_refuse_bad_input(bad, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        DirectedEdges(bad, 6)


# the zoo, exported -----------------------------------------------------------------------------------------------
def _pruned(name, data, weights=0.9, seed=0, granularity=WeightGranularity.ELEMENT):
    """A model with random biases and gates, masks at the targets (random choice): ``weights`` of
    every weight tensor (element granularity) or of every hidden unit group (unit granularity),
    half of the edges and features."""
    torch.manual_seed(seed)
    model = build_model(name, data.num_features, data.num_classes, **SMALL.get(name, {}))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(-0.5, 0.5)
    pruner = CoPruner(model, data, learn_edge_weights=True, learn_feature_gates=True, weight_granularity=granularity)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        pruner.edge_logit.uniform_(-2.0, 4.0, generator=g)
        pruner.feature_gate.uniform_(0.2, 1.5, generator=g)
    for site in list(pruner.engine):
        fraction = weights if site.name.startswith((WEIGHT_PREFIX, UNIT_PREFIX)) else 0.5
        pruner.engine.prune(site.name, int(site.numel * fraction), torch.rand(site.mask.shape, generator=g))
    pruner.refresh()
    return model.eval(), pruner


def _zero_units(model, writes, reads, units):
    """Structured pruning by hand: zero the units' columns in ``writes`` (biases: entries) and rows in ``reads``."""
    with torch.no_grad():
        for name in writes:
            p = model.get_parameter(name)
            p[..., units] = 0.0
        for name in reads:
            model.get_parameter(name)[units] = 0.0


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("structure", ["unstructured", "structured"])
def test_every_zoo_model_exports_to_the_same_outputs(name, structure, small_csbm, tmp_path):
    """Unstructured: 90% of every weight tensor; structured: a unit-mode pruner removes 25% of every unit group,
    and the export cuts out exactly those units."""
    data = small_csbm
    if structure == "unstructured":
        model, pruner = _pruned(name, data, 0.9)
    else:
        model, pruner = _pruned(name, data, 0.25, granularity=WeightGranularity.UNIT)
    exported = compact(model, pruner)
    graph = kept_graph(pruner)
    assert max_abs_difference(exported, model, pruner, data, graph) <= 1e-5
    assert exported.units["features"]["kept"] <= int(pruner.engine.mask("features").sum())
    assert set(exported.units) == {"features", *model.hidden_units()}
    for group in pruner.unit_groups:
        units, live = exported.units[group], pruner.unit_mask(group)
        assert units == {"total": live.numel(), "kept": int(live.sum())} and units["kept"] < units["total"], units
    # written and read back: the same outputs from the files alone
    spec = MODELS[name]
    constructor = {"in_channels": data.num_features, "out_channels": data.num_classes,
                   "hidden_channels": SMALL.get(name, {}).get("hidden_channels", spec.hidden_channels),
                   "num_layers": SMALL.get(name, {}).get("num_layers", spec.num_layers), "dropout": spec.dropout,
                   "options": dict(spec.options)}
    write_export(tmp_path / "export", exported, graph,
                 describe(exported, name, constructor, graph, dense_macs(model, data.num_nodes, data.edges.num_edges)))
    loaded = load_exported(tmp_path / "export")
    with torch.no_grad():
        expected = exported(data.x, graph["edge_index"], graph["edge_weight"])
        assert torch.equal(loaded(data.x, graph["edge_index"], graph["edge_weight"]), expected)


def test_unstructured_90_percent_drops_the_units_whose_weights_all_died(small_csbm):
    """GCN hidden 32 at 90% per tensor: a hidden unit dies when its 7 x 3 output row or 20-row input column is empty."""
    model, pruner = _pruned("gcn", small_csbm, 0.9)
    exported = compact(model, pruner)
    w0, w1 = model.convs[0].lin.weight, model.convs[1].lin.weight
    silent = (w0 == 0).all(0) & (model.convs[0].bias <= 0)
    unread = (w1 == 0).all(1)
    assert exported.units["convs.0"]["kept"] == int((~(silent | unread)).sum()) < 32
    assert exported.net.convs[0].lin.weight.shape == (exported.kept_features.numel(), exported.units["convs.0"]["kept"])


@pytest.mark.parametrize("name, writes, reads", [
    # a unit of one GCNII layer is carried on by the identity mapping
    ("gcn2", ["convs.1.lin.weight"], ["convs.2.lin.weight"]),
    # the channel's norms still read it (LayerNorm statistics), whatever one block writes or reads
    ("resgcn", ["blocks.0.conv.lin.weight", "blocks.0.conv.bias"], ["blocks.1.conv.lin.weight"]),
])
def test_units_zeroed_in_one_layer_of_a_stack_stay_and_the_export_is_exact(small_csbm, name, writes, reads):
    model, pruner = _pruned(name, small_csbm, 0.0)
    _zero_units(model, writes, reads, [0, 3, 4, 9, 12])
    exported = compact(model, pruner)
    assert exported.units["hidden"] == {"total": 16, "kept": 16}
    assert max_abs_difference(exported, model, pruner, small_csbm, kept_graph(pruner)) <= 1e-5


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_resgcn_units_go_with_batch_norm_statistics_or_without_norms(small_csbm, norm):
    torch.manual_seed(0)
    model = build_model("resgcn", small_csbm.num_features, small_csbm.num_classes, 16, 3, norm=norm)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.dim() == 1:  # biases, norm entries, running statistics
                tensor.uniform_(0.5, 1.5) if name.endswith("running_var") else tensor.uniform_(-0.5, 0.5)
    pruner = CoPruner(model, small_csbm, weight_granularity=WeightGranularity.UNIT)
    pruner.engine.prune(UNIT_PREFIX + "hidden", 5, torch.rand(16, generator=torch.Generator().manual_seed(0)))
    pruner.refresh()
    exported = compact(model.eval(), pruner)
    live = pruner.unit_mask("hidden")
    assert exported.units["hidden"] == {"total": 16, "kept": 11}
    if norm == "batch":
        assert torch.equal(exported.net.norm_out.running_mean, model.norm_out.running_mean[live])
    assert max_abs_difference(exported, model, pruner, small_csbm, kept_graph(pruner)) <= 1e-5


def test_a_gcn2_unit_silent_in_every_layer_goes_from_every_layer(small_csbm):
    model, pruner = _pruned("gcn2", small_csbm, 0.0)
    convs = [f"convs.{i}.lin.weight" for i in range(4)]
    with torch.no_grad():
        model.lin_in.bias[[2, 7]] = -0.1  # relu(-0.1) = 0
    _zero_units(model, ["lin_in.weight", *convs], [], [2, 7])
    exported = compact(model, pruner)
    assert exported.units["hidden"] == {"total": 16, "kept": 14}
    assert exported.net.convs[0].lin.weight.shape == (14, 14)
    assert max_abs_difference(exported, model, pruner, small_csbm, kept_graph(pruner)) <= 1e-5


def test_gat_heads_may_end_up_uneven_or_gone(small_csbm):
    model, pruner = _pruned("gat", small_csbm, 0.0)
    head_one = list(range(8, 16))  # all of head 1, and one column of head 0
    _zero_units(model, ["convs.0.lin.weight", "convs.0.bias"], ["convs.1.lin.weight"], [0, *head_one])
    exported = compact(model, pruner)
    heads = exported.net.convs[0].head_index
    assert heads.numel() == 64 - 9 and 1 not in heads.tolist() and int((heads == 0).sum()) == 7
    assert max_abs_difference(exported, model, pruner, small_csbm, kept_graph(pruner)) <= 1e-5


def test_the_operator_is_cached_for_the_same_graph_tensors(small_csbm):
    model, pruner = _pruned("gcn", small_csbm)
    exported = compact(model, pruner)
    graph = kept_graph(pruner)
    first = exported.graph(graph["edge_index"], graph["edge_weight"], small_csbm.num_nodes)
    assert exported.graph(graph["edge_index"], graph["edge_weight"], small_csbm.num_nodes) is first
    assert exported.graph(graph["edge_index"].clone(), graph["edge_weight"], small_csbm.num_nodes) is not first
    again = exported.graph(graph["edge_index"], graph["edge_weight"], small_csbm.num_nodes)
    graph["edge_weight"].mul_(0.5)  # changed in place: must not reuse the old operator
    assert exported.graph(graph["edge_index"], graph["edge_weight"], small_csbm.num_nodes) is not again


# run folder -> export folder -> predictions -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def cora_run(tmp_path_factory, cora):
    out = tmp_path_factory.mktemp("cora") / "run"
    threads = torch.get_num_threads()
    try:
        assert main(["prune", "--dataset", "cora", "--weight-sparsity", "0.9", "--edge-sparsity", "0.5",
                     "--feature-sparsity", "0.5", "--epochs", "60", "--hidden", "32", "--threads", "1",
                     "--out", str(out), "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_round_trip_on_cora_through_the_command_line(cora_run, cora, tmp_path, capsys):
    export = tmp_path / "export"
    assert main(["export", str(cora_run), "--out", str(export)]) == 0
    assert sorted(p.name for p in export.iterdir()) == ["architecture.json", "graph.pt", "model.pt"]
    architecture = json.loads((export / "architecture.json").read_text())
    assert architecture["check"]["max_abs_diff_vs_masked_model"] <= 1e-5
    assert architecture["macs"]["ratio"] < 1.0
    for name in ("model.pt", "graph.pt"):
        torch.load(export / name, weights_only=True)  # no training code, no pickled objects
    capsys.readouterr()
    csv_path = tmp_path / "predictions.csv"
    assert main(["predict", str(export), "--dataset", "cora", "--out", str(csv_path)]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.reader(csv_path.open()))
    assert rows[0] == ["node", "predicted", *(f"p{k}" for k in range(7))] and len(rows) == 1 + cora.num_nodes
    probabilities = torch.tensor([[float(v) for v in row[2:]] for row in rows[1:]])
    assert torch.allclose(probabilities.sum(1), torch.ones(cora.num_nodes), atol=1e-4)

    run = load_run(cora_run, data=cora)
    masked = run.predict()
    top2 = masked.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-4  # ties within rounding may go either way
    predicted = torch.tensor([int(row[1]) for row in rows[1:]])
    assert torch.equal(predicted[clear], masked.argmax(1)[clear])
    recorded = json.loads((cora_run / "seed-0" / "metrics.json").read_text())["test"]
    assert f"test accuracy {recorded:.4f}" in printed


def test_load_exported_equals_the_masked_model_and_pyg_takes_the_graph(cora_run, cora, tmp_path):
    from torch_geometric.data import Data
    from torch_geometric.nn import GCNConv

    export_run(cora_run, tmp_path / "export", data=cora)
    model = load_exported(tmp_path / "export")
    assert isinstance(model, torch.nn.Module) and not any(p.requires_grad for p in model.parameters())
    graph = load_export_graph(tmp_path / "export")
    pyg = Data(edge_index=graph["edge_index"], edge_weight=graph["edge_weight"], num_nodes=graph["num_nodes"])
    assert pyg.validate() and pyg.is_undirected()
    run = load_run(cora_run, data=cora)
    with torch.no_grad():
        out = model(cora.x, pyg.edge_index, pyg.edge_weight)
        assert float((out - run.predict()).abs().max()) <= 1e-5
        # PyG's own GCNConv with the exported weights computes the same first layer
        first = model.net.convs[0]
        conv = GCNConv(first.lin.weight.size(0), first.lin.weight.size(1))
        conv.lin.weight.copy_(first.lin.weight.t())
        conv.bias.copy_(first.bias)
        x = cora.x[:, model.kept_features]
        ours = first(x, model.graph(pyg.edge_index, pyg.edge_weight, cora.num_nodes))
        assert float((conv(x, pyg.edge_index, pyg.edge_weight) - ours).abs().max()) <= 1e-5


def test_predict_on_the_data_sets_own_graph(cora_run, cora, tmp_path):
    export_run(cora_run, tmp_path / "export", data=cora)
    pruned = predict(tmp_path / "export", cora)
    full = predict(tmp_path / "export", cora, use_dataset_graph=True)
    assert pruned.probabilities.shape == full.probabilities.shape == (cora.num_nodes, 7)
    assert not torch.allclose(pruned.probabilities, full.probabilities)  # other edges, other outputs


def test_export_refuses_a_non_empty_out_and_leaves_it(cora_run, cora, tmp_path):
    from gnnprune.io import OutputExistsError

    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(OutputExistsError):
        export_run(cora_run, out, data=cora)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("damage, message", [
    (lambda s: s.pop("net.convs.0.bias"), "missing key 'net.convs.0.bias'"),
    (lambda s: s.update(extra=torch.zeros(1)), "unexpected key 'extra'"),
    (lambda s: s.update({"net.convs.1.lin.weight": torch.zeros(3, 3)}), "key 'net.convs.1.lin.weight' is [3, 3]"),
])
def test_a_damaged_export_names_file_and_key(cora_run, cora, tmp_path, damage, message):
    export_run(cora_run, tmp_path / "export", data=cora)
    path = tmp_path / "export" / "model.pt"
    state = torch.load(path, weights_only=True)
    damage(state)
    torch.save(state, path)
    with pytest.raises(ExportError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        load_exported(tmp_path / "export")
    assert str(path) in str(info.value)


def test_exported_model_checks_its_input(cora_run, cora, tmp_path):
    export_run(cora_run, tmp_path / "export", data=cora)
    model = load_exported(tmp_path / "export")
    graph = load_export_graph(tmp_path / "export")
    with pytest.raises(ValueError, match=r"expected x of shape \[N, 1433\]"):
        model(cora.x[:, :100], graph["edge_index"], graph["edge_weight"])
    with pytest.raises(ValueError, match="one edge weight per column"):
        model(cora.x, graph["edge_index"], graph["edge_weight"][:10])


def test_masked_graph_of_directed_edges_reports_column_weights():
    edges = EdgeSet(torch.tensor([[0, 1], [1, 2]]), 3)
    directed = DirectedEdges(edges.directed(), 3)
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert torch.equal(MaskedGraph(directed, weight).directed_edge_weight, weight)


def test_a_resgcn_unit_run_exports_without_exactly_its_pruned_channels(tmp_path):
    """LiveLayerNorm leaves a pruned channel out of its statistics, so the export cuts it from the whole stack."""
    run_dir = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        assert main(["prune", "--dataset", "synthetic:num_nodes=300,num_classes=3,num_features=16,num_val=60,num_test=100",
                     "--model", "resgcn", "--layers", "3", "--hidden", "16", "--weight-structure", "unit",
                     "--weight-sparsity", "0.5", "--edge-sparsity", "0.3", "--feature-sparsity", "0.25",
                     "--epochs", "20", "--threads", "1", "--no-progress", "--out", str(run_dir)]) == 0
    finally:
        torch.set_num_threads(threads)
    architecture = export_run(run_dir, tmp_path / "export")
    run = load_run(run_dir)
    live = run.pruner.unit_mask("hidden")
    assert int(live.sum()) == 8
    assert architecture["units"]["hidden"] == {"total": 16, "kept": 8}
    assert architecture["check"]["max_abs_diff_vs_masked_model"] <= 1e-5
    exported = load_exported(tmp_path / "export")
    net, model = exported.net, run.model
    assert torch.equal(net.lin_in.bias, model.lin_in.bias[live]) and torch.equal(net.lin_out.weight, model.lin_out.weight[live])
    for small, block in zip(net.blocks, model.blocks):
        assert torch.equal(small.conv.lin.weight, block.conv.lin.weight[live][:, live])
        assert torch.equal(small.norm.weight, block.norm.weight[live]) and torch.equal(small.norm.bias, block.norm.bias[live])
    assert bool((net.norm_out.weight != 0).all())  # every channel left is live
    graph = load_export_graph(tmp_path / "export")
    with torch.no_grad():
        out = exported(run.data.x, graph["edge_index"], graph["edge_weight"])
    assert float((out - run.predict()).abs().max()) <= 1e-5
