import pytest
import torch

from gnnprune.data import PRESETS, CSBMConfig, check_dataset_name, csbm, parse_synthetic


def _degrees(data):
    return torch.bincount(data.edges.edges.view(-1), minlength=data.num_nodes).float()


def test_degree_skew_gives_a_heavy_tail_with_exact_edges_and_homophily():
    base = dict(num_nodes=4000, num_edges=20000, num_classes=4, homophily=0.7, num_val=200, num_test=400, seed=2)
    flat, skewed = csbm(CSBMConfig(**base)), csbm(CSBMConfig(**base, degree_skew=0.6))
    assert flat.edges.num_edges == skewed.edges.num_edges == 20000
    d_flat, d_skew = _degrees(flat), _degrees(skewed)
    assert d_flat.max() < 30 < 200 < d_skew.max()          # Poisson(10) vs Zipf-weighted hubs
    assert d_skew.median() < d_flat.median()
    u, v = skewed.edges.edges
    assert float((skewed.y[u] == skewed.y[v]).float().mean()) == pytest.approx(0.7, abs=0.03)
    again = csbm(CSBMConfig(**base, degree_skew=0.6))
    assert torch.equal(again.edges.edges, skewed.edges.edges)


def test_presets_and_overrides():
    assert parse_synthetic("synthetic:arxiv") == PRESETS["arxiv"]
    arxiv = PRESETS["arxiv"]
    assert (arxiv.num_nodes, arxiv.num_edges, arxiv.num_features, arxiv.num_classes) == (169_343, 1_166_243, 128, 40)
    products = PRESETS["products"]
    assert (products.num_nodes, products.num_edges, products.num_features, products.num_classes) == (
        2_449_029, 61_859_140, 100, 47)
    assert parse_synthetic("synthetic:products,seed=3,homophily=0.5").seed == 3
    assert parse_synthetic("synthetic:num_nodes=500,degree_skew=0.5") == CSBMConfig(num_nodes=500, degree_skew=0.5)
    for bad, message in (("synthetic:papers", "unknown synthetic preset"), ("synthetic:arxiv,seed=x", "seed needs an int"),
                         ("synthetic:degree_skew=3", "degree_skew")):
        with pytest.raises(ValueError, match=message):
            check_dataset_name(bad)
    with pytest.raises(ValueError, match="choose from"):
        check_dataset_name("ogbn-arxiv:3")


def test_skewed_labels_are_learnable():
    from gnnprune.copruning import CoPruner
    from gnnprune.methods import Dense
    from gnnprune.nn import build_model
    from gnnprune.training import TrainConfig, train

    data = csbm(CSBMConfig(num_nodes=1500, num_edges=6000, num_classes=3, num_features=16, homophily=0.8,
                           signal=1.0, degree_skew=0.6, num_val=300, num_test=600, seed=0))
    torch.manual_seed(0)
    model = build_model("gcn", data.num_features, data.num_classes, 32, 2, 0.5)
    result = train(model, data, CoPruner(model, data), Dense(), TrainConfig(epochs=60), progress=False)
    assert result.test > 0.7  # chance is 1/3
