import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import GATConv as PygGATConv

from gnnprune.copruning import EDGES, CoPruner
from gnnprune.graph import EdgeSet, MaskedGraph
from gnnprune.nn import build_model
from gnnprune.nn.gat import GAT, GATConv
from helpers import tiny_graph


def _copy_to_pyg(conv: GATConv, pyg: PygGATConv) -> None:
    with torch.no_grad():
        pyg.lin.weight.copy_(conv.lin.weight.t())
        pyg.att_src.copy_(conv.att_src.unsqueeze(0))
        pyg.att_dst.copy_(conv.att_dst.unsqueeze(0))
        pyg.bias.copy_(torch.randn_like(pyg.bias))
        conv.bias.copy_(pyg.bias)


def _dense_reference(conv: GATConv, x, edges: EdgeSet, weight=None):
    """The weighted-softmax attention layer written densely, straight from the formula."""
    n = x.size(0)
    w = torch.zeros(n, n, dtype=x.dtype)
    u, v = edges.edges
    ew = torch.ones(edges.num_edges, dtype=x.dtype) if weight is None else weight.to(x.dtype)
    w[v, u] = ew  # w[i, j]: edge j -> i
    w[u, v] = ew
    w = w + torch.eye(n, dtype=x.dtype)
    h = (x @ conv.lin.weight.to(x.dtype)).view(n, conv.heads, conv.out_channels)
    s_dst = (h * conv.att_dst.to(x.dtype)).sum(-1)  # [n, heads]
    s_src = (h * conv.att_src.to(x.dtype)).sum(-1)
    e = F.leaky_relu(s_dst.t().unsqueeze(2) + s_src.t().unsqueeze(1), conv.negative_slope)  # [heads, i, j]
    num = w * torch.exp(e - e.max(dim=2, keepdim=True).values)
    alpha = num / num.sum(dim=2, keepdim=True)
    out = torch.einsum("kij,jkc->ikc", alpha, h)
    out = out.reshape(n, -1) if conv.concat else out.mean(1)
    return out + conv.bias.to(x.dtype)


def test_two_layer_gat_matches_pyg_gatconv():
    data = tiny_graph(num_features=5)
    torch.manual_seed(0)
    model = GAT(5, 4, 3, num_layers=2, heads=3, out_heads=2).eval()
    pyg1, pyg2 = PygGATConv(5, 4, heads=3), PygGATConv(12, 3, heads=2, concat=False)
    _copy_to_pyg(model.convs[0], pyg1)
    _copy_to_pyg(model.convs[1], pyg2)
    edge_index = data.edges.directed()
    theirs = pyg2(F.elu(pyg1(data.x, edge_index)), edge_index)
    ours = model(data.x, MaskedGraph.full(data.edges))
    assert ours.shape == (6, 3)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_weighted_attention_matches_the_dense_formula():
    data = tiny_graph(num_features=4)
    torch.manual_seed(1)
    conv = GATConv(4, 3, heads=2).double().eval()
    with torch.no_grad():
        conv.bias.copy_(torch.randn(6))
    x = data.x.double()
    w = torch.rand(7, dtype=torch.double)
    ours = conv(x, MaskedGraph(data.edges.select(), w))
    assert torch.allclose(ours, _dense_reference(conv, x, data.edges, w), atol=1e-10)


@pytest.mark.parametrize("scale", [1.0, 200.0])
def test_zero_weight_edge_equals_absent_edge(scale):
    """The probe pass relies on this; ``scale`` makes the dead edges' scores dominate their rows."""
    data = tiny_graph()
    torch.manual_seed(0)
    model = GAT(3, 4, 2, heads=2).eval()
    with torch.no_grad():
        for conv in model.convs:
            conv.att_src.mul_(scale)
            conv.att_dst.mul_(scale)
    keep = torch.tensor([1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
    w = torch.rand(7) * 0.9 + 0.05
    w[~keep] = 0.0
    present = model(data.x, MaskedGraph(data.edges.select(), w))
    absent = model(data.x, MaskedGraph(data.edges.select(keep), w[keep]))
    assert torch.isfinite(present).all()
    assert torch.allclose(present, absent, atol=1e-6)


def test_probe_gradient_of_a_dead_edge_is_the_real_derivative_at_zero():
    data = tiny_graph(num_features=4)
    torch.manual_seed(0)
    model = GAT(4, 3, 2, heads=2, dropout=0.0, attention_dropout=0.0)
    pruner = CoPruner(model, data, learn_edge_weights=True)
    pruner.engine.prune(EDGES, 2, torch.tensor([0.0, 9, 9, 0, 9, 9, 9]))  # kill edges 0 and 3
    pruner.refresh()
    loss = lambda logits: F.cross_entropy(logits[data.train_mask], data.y[data.train_mask])  # noqa: E731
    probe = pruner.probe(loss)
    model.eval().double()
    x = data.x.double()
    base = (torch.sigmoid(pruner.edge_logit) * pruner.engine.mask(EDGES)).detach().double()
    for e in (0, 3, 5):
        eps = 1e-6
        plus, minus = base.clone(), base.clone()
        plus[e] += eps
        minus[e] = minus[e] - eps if e == 5 else minus[e]  # dead edges: one-sided at 0
        fd = (loss(model(x, MaskedGraph(data.edges.select(), plus)))
              - loss(model(x, MaskedGraph(data.edges.select(), minus)))) / (plus[e] - minus[e])
        assert probe.edge_grad[e].item() == pytest.approx(fd.item(), rel=1e-3, abs=1e-7)
    assert probe.edge_grad[0] != 0 and probe.edge_grad[3] != 0


def test_isolated_nodes_attend_to_themselves_only():
    data = tiny_graph()
    torch.manual_seed(0)
    conv = GATConv(3, 4, heads=2).eval()
    out = conv(data.x, MaskedGraph(data.edges.select(torch.zeros(7, dtype=torch.bool))))
    assert torch.allclose(out, data.x @ conv.lin.weight + conv.bias, atol=1e-6)


def test_registry_defaults_and_prunable_weights():
    model = build_model("gat", 10, 3)
    assert isinstance(model, GAT)
    assert [c.heads for c in model.convs] == [8, 1] and model.convs[0].out_channels == 8
    assert model.dropout == 0.6 and model.convs[0].attention_dropout == 0.6
    weights = model.prunable_weights()
    assert set(weights) == {f"convs.{i}.{p}" for i in (0, 1) for p in ("lin.weight", "att_src", "att_dst")}
    assert weights["convs.0.att_src"].shape == (8, 8)
    assert set(model.input_weight_names) <= set(weights)
    assert weights["convs.0.lin.weight"].shape == (10, 64)


def test_macs_count_transform_attention_and_aggregation():
    model = GAT(10, 4, 3, heads=2)  # layer 0: 10 -> 2 x 4 (concat), layer 1: 8 -> 1 x 3
    full = {name: p.numel() for name, p in model.prunable_weights().items()}
    n, e = 6, 7
    entries = 2 * e + n
    layers = model.macs(n, e, full)
    assert [layer["layer"] for layer in layers] == ["convs.0", "convs.1"]
    assert layers[0]["transform"] == (10 * 8 + 8 + 8) * n
    assert layers[0]["aggregation"] == entries * (8 + 2)
    assert layers[1]["transform"] == (8 * 3 + 3 + 3) * n
    assert layers[1]["aggregation"] == entries * (3 + 1)
    half = {name: k // 2 for name, k in full.items()}
    pruned = model.macs(n, 3, half)
    assert pruned[0]["transform"] == (40 + 4 + 4) * n
    assert pruned[0]["aggregation"] == (2 * 3 + n) * 10
