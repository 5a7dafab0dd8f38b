import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from gnnprune.graph import EdgeSet, MaskedGraph
from gnnprune.macs import gcn_operator_entries
from gnnprune.nn import build_model
from gnnprune.nn.resgcn import ResGCN
from helpers import tiny_graph

NORMS = ("layer", "batch", "none")


def _model(in_channels=3, hidden=8, out=2, layers=4, norm="layer", seed=0):
    torch.manual_seed(seed)
    model = ResGCN(in_channels, hidden, out, num_layers=layers, dropout=0.0, norm=norm)
    with torch.no_grad():  # non-trivial biases, norm parameters and running statistics
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5) if "norm" in name and name.endswith("weight") else p.normal_(0, 0.3)
        for norm in [*(block.norm for block in model.blocks), model.norm_out]:
            if isinstance(norm, torch.nn.BatchNorm1d):
                norm.running_mean.normal_()
                norm.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _dense_operator(edge_index, edge_weight, n, dtype):
    ei, w = gcn_norm(edge_index, edge_weight, num_nodes=n, add_self_loops=True, dtype=dtype)
    a = torch.zeros(n, n, dtype=dtype)
    a.index_put_((ei[1], ei[0]), w, accumulate=True)
    return a


def _reference(model: ResGCN, x, a):
    """The block equations written out densely (eval mode)."""
    h = x @ model.lin_in.weight + model.lin_in.bias
    for block in model.blocks:
        h = h + a @ F.relu(block.norm(h)) @ block.conv.lin.weight + block.conv.bias
    return F.relu(model.norm_out(h)) @ model.lin_out.weight + model.lin_out.bias


@pytest.mark.parametrize("norm", NORMS)
def test_matches_dense_reference_with_edge_weights(norm):
    data = tiny_graph(num_features=5)
    model = _model(5, 6, 3, layers=5, norm=norm).double()
    x = data.x.double()
    w = torch.rand(data.edges.num_edges, dtype=torch.float64) + 0.1
    keep = torch.tensor([1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
    for k in (torch.ones(7, dtype=torch.bool), keep):
        ours = model(x, MaskedGraph(data.edges.select(k), w[k]))
        a = _dense_operator(data.edges.directed(k), w[k].repeat(2), 6, torch.float64)
        assert torch.allclose(ours, _reference(model, x, a), atol=1e-6)


@pytest.mark.parametrize("norm", NORMS)
def test_masking_edges_equals_deleting_them(norm):
    data = tiny_graph()
    keep = torch.tensor([1, 1, 0, 1, 0, 1, 1], dtype=torch.bool)
    model = _model(layers=8, norm=norm)
    masked = model(data.x, MaskedGraph(data.edges.select(keep)))
    deleted = model(data.x, MaskedGraph.full(EdgeSet(data.edges.edges[:, keep], 6)))
    assert torch.allclose(masked, deleted, atol=1e-6)


@pytest.mark.parametrize("norm", NORMS)
def test_zero_edge_weight_equals_absent_edge(norm):
    data = tiny_graph()
    w = torch.rand(7) + 0.1
    keep = torch.ones(7, dtype=torch.bool)
    keep[[2, 5]] = False
    model = _model(layers=8, norm=norm)
    zeroed = model(data.x, MaskedGraph(data.edges.select(), w * keep))
    absent = model(data.x, MaskedGraph(data.edges.select(keep), w[keep]))
    assert torch.allclose(zeroed, absent, atol=1e-6)


@pytest.mark.parametrize("norm", NORMS)
def test_node_permutation_permutes_the_output(norm):
    data = tiny_graph()
    keep = torch.tensor([1, 0, 1, 1, 1, 0, 1], dtype=torch.bool)
    model = _model(layers=5, norm=norm)
    out = model(data.x, MaskedGraph(data.edges.select(keep)))
    perm = torch.tensor([3, 5, 0, 1, 4, 2])  # new node i is old node perm[i]
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(6)
    permuted_edges = EdgeSet.from_edge_index(inverse[data.edges.edges[:, keep]], 6)
    out_p = model(data.x[perm], MaskedGraph.full(permuted_edges))
    assert torch.allclose(out_p, out[perm], atol=1e-6)


@pytest.mark.parametrize("norm", NORMS)
def test_gradients_reach_every_edge_weight_and_weight(norm):
    data = tiny_graph()
    model = _model(layers=3, norm=norm).train()
    w = torch.full((7,), 0.9, requires_grad=True)
    logits = model(data.x, MaskedGraph(data.edges.select(), w))
    F.cross_entropy(logits, data.y).backward()
    assert w.grad is not None and bool((w.grad != 0).all())
    for name, p in model.prunable_weights().items():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_prunable_weights_exclude_norm_parameters():
    model = ResGCN(5, 4, 3, num_layers=3, norm="layer")
    names = set(model.prunable_weights())
    assert names == {"lin_in.weight", "lin_out.weight", *(f"blocks.{i}.conv.lin.weight" for i in range(3))}
    assert model.lin_in.weight.shape == (5, 4)  # rows index input features
    assert set(model.input_weight_names) <= names
    with pytest.raises(ValueError, match="norm"):
        ResGCN(5, 4, 3, norm="group")
    with pytest.raises(ValueError):
        ResGCN(5, 4, 3, num_layers=0)


def test_macs_count_every_layer():
    model = ResGCN(10, 4, 3, num_layers=2)
    n, e = 6, 7
    kept = {name: p.numel() for name, p in model.prunable_weights().items()}
    layers = model.macs(n, e, kept)
    assert [layer["layer"] for layer in layers] == ["lin_in", "blocks.0", "blocks.1", "lin_out"]
    entries = gcn_operator_entries(e, n)
    assert layers[0] == {"layer": "lin_in", "transform": 40 * n, "aggregation": 0}
    assert layers[2] == {"layer": "blocks.1", "transform": 16 * n, "aggregation": entries * 4}
    assert layers[3] == {"layer": "lin_out", "transform": 12 * n, "aggregation": 0}
    halved = model.macs(n, 3, {name: k // 2 for name, k in kept.items()})
    assert all(h["transform"] <= d["transform"] and h["aggregation"] <= d["aggregation"]
               for h, d in zip(halved, layers))


def test_reset_parameters_redraws_weights_and_resets_norms():
    model = ResGCN(3, 4, 2, num_layers=2)
    before = model.blocks[0].conv.lin.weight.clone()
    with torch.no_grad():
        model.blocks[0].conv.bias.fill_(1.0)
        model.blocks[0].norm.weight.fill_(3.0)
    model.reset_parameters()
    assert not torch.equal(before, model.blocks[0].conv.lin.weight)
    assert torch.all(model.blocks[0].conv.bias == 0)
    assert torch.all(model.blocks[0].norm.weight == 1)


def test_registered_as_a_deep_model():
    model = build_model("resgcn", 5, 3)
    assert isinstance(model, ResGCN)
    assert len(model.blocks) >= 8
