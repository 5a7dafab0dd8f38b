import math

import pytest
import torch

from cnn_bridge.layer_analysis import analyse, gating_complexity, gbs, knn_graph, linear_cka, modularity
from cnn_bridge.models import CifarResNet


def _two_triangles() -> torch.Tensor:
    a = torch.zeros(6, 6)
    for i, j in [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5)]:
        a[i, j] = a[j, i] = 1
    return a


def test_two_disjoint_class_triangles_have_modularity_one_half():
    assert modularity(_two_triangles(), torch.tensor([0, 0, 0, 1, 1, 1])) == pytest.approx(0.5, abs=1e-12)


def test_one_class_has_modularity_zero():
    assert modularity(_two_triangles(), torch.zeros(6, dtype=torch.long)) == pytest.approx(0.0, abs=1e-12)


def test_modularity_is_negative_when_classes_cut_every_edge():
    a = torch.tensor([[0, 1.0], [1.0, 0]])
    assert modularity(a, torch.tensor([0, 1])) == pytest.approx(-0.5, abs=1e-12)


def test_knn_graph_links_class_clusters():
    # two tight clusters of 4 points in different directions: with k = 3 every edge stays in its cluster
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    x = centres.repeat_interleave(4, 0) + 0.01 * torch.randn(8, 3, generator=generator)
    labels = torch.tensor([0] * 4 + [1] * 4)
    a = knn_graph(x, 3)
    assert torch.equal(a, a.T) and (a[:4, 4:] == 0).all()
    assert (a[:4, :4] + torch.eye(4) > 0).all()
    assert modularity(a, labels) == pytest.approx(0.5, abs=1e-3)


def test_knn_graph_rejects_k_too_large():
    with pytest.raises(ValueError, match="k must be"):
        knn_graph(torch.randn(3, 2), 3)


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


@pytest.mark.parametrize("measure", [linear_cka, gbs])
def test_similarity_of_a_layer_with_itself_is_one_and_invariant(measure):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(40, 12, generator=generator, dtype=torch.float64)
    assert measure(x, x) == pytest.approx(1.0, abs=1e-12)
    y = torch.randn(40, 7, generator=generator, dtype=torch.float64)
    base = measure(x, y)
    assert base < 0.9
    assert measure(x @ _orthogonal(12, 2), y) == pytest.approx(base, abs=1e-10)
    assert measure(3.7 * x, y) == pytest.approx(base, abs=1e-10)
    assert measure(x @ _orthogonal(12, 3) * 0.25, y @ _orthogonal(7, 4)) == pytest.approx(base, abs=1e-10)


def test_cka_is_not_invariant_to_an_anisotropic_scaling():
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(30, 4, generator=generator, dtype=torch.float64)
    y = torch.randn(30, 4, generator=generator, dtype=torch.float64)
    assert linear_cka(x * torch.tensor([10.0, 1, 1, 0.1]), y) != pytest.approx(linear_cka(x, y), abs=1e-3)


def test_two_unit_relu_layer_with_inputs_in_all_four_regions_has_two_bits():
    inputs = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]).repeat(5, 1)
    labels = torch.tensor([0, 0, 1, 1]).repeat(5)
    report = gating_complexity(inputs > 0, labels)
    assert report["entropy_bits"] == pytest.approx(2.0, abs=1e-12)
    assert report["unit_entropy_bits"] == pytest.approx(2.0, abs=1e-12)
    assert report["input_information_bits"] == pytest.approx(2.0, abs=1e-12)
    # the label is the second unit's sign flipped: one bit of the state is about the label
    assert report["label_information_bits"] == pytest.approx(1.0, abs=1e-12)
    assert report["unit_label_information_bits"] == pytest.approx(1.0, abs=1e-12)
    assert report["entropy_ceiling_bits"] == pytest.approx(math.log2(20))


def test_constant_gate_has_zero_entropy():
    states = torch.ones(10, 2, dtype=torch.bool)
    report = gating_complexity(states, torch.arange(10) % 2)
    assert report["entropy_bits"] == 0.0 and report["unit_entropy_bits"] == 0.0
    assert report["label_information_bits"] == 0.0


def test_analyse_resnet_reports_every_layer():
    torch.manual_seed(0)
    model = CifarResNet(20).eval()
    images = torch.randn(12, 3, 32, 32)
    labels = torch.arange(12) % 3
    report = analyse(model, images, labels, k=3)
    assert report["layers"] == ["stem"] + [f"block{i}" for i in range(1, 10)]
    assert len(report["modularity"]) == 10 and all(-1.0 <= q <= 1.0 for q in report["modularity"])
    for name in ("cka", "gbs"):
        matrix = torch.tensor(report[name])
        assert matrix.shape == (10, 10) and torch.allclose(matrix, matrix.T)
        assert torch.allclose(matrix.diagonal(), torch.ones(10, dtype=matrix.dtype), atol=1e-9)
    assert [c["layer"] for c in report["complexity"]][:3] == ["stem", "block1.inner", "block1.out"]
    assert len(report["complexity"]) == 19


def test_cli_analyse_writes_json_and_heat_maps(tmp_path, capsys):
    import json

    from gnnprune.cli import main

    torch.manual_seed(0)
    model = CifarResNet(20, num_classes=10, in_channels=1)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    out = tmp_path / "analysis"
    assert main(["cnn", "analyse", "--model", "resnet20", "--dataset", "digits", "--checkpoint", str(tmp_path / "m.pt"),
                 "--images", "50", "--no-progress", "--out", str(out)]) == 0
    report = json.loads((out / "analysis.json").read_text())
    assert len(report["modularity"]) == 10 and report["images"] == 50
    assert {"modularity.png", "cka.png", "gbs.png", "complexity.png"} <= {p.name for p in out.iterdir()}
    code = main(["cnn", "analyse", "--model", "resnet20", "--dataset", "digits", "--checkpoint", str(tmp_path / "m.pt"),
                 "--images", "50", "--k", "50", "--out", str(tmp_path / "other")])
    assert code == 2 and "--k 50 must be below --images 50" in capsys.readouterr().err


def test_cli_analyse_reads_a_compact_model(tmp_path):
    import json

    from gnnprune.cli import main

    from cnn_bridge.compact import architecture, prunable_layers, remove_channels, save_compact

    torch.manual_seed(0)
    shape = (1, 8, 8)
    model = CifarResNet(20, num_classes=10, in_channels=1).eval()
    layers = prunable_layers(model, shape)
    keep = {layer.conv: torch.arange(model.get_submodule(layer.conv).out_channels) % 2 == 0 for layer in layers}
    small = remove_channels(model, keep, shape)
    save_compact(tmp_path / "run", small, architecture("resnet20", small, layers, num_classes=10, in_channels=1))
    out = tmp_path / "analysis"
    assert main(["cnn", "analyse", "--dataset", "digits", "--compact", str(tmp_path / "run"), "--images", "40",
                 "--no-progress", "--out", str(out)]) == 0
    report = json.loads((out / "analysis.json").read_text())
    inner = [c for c in report["complexity"] if c["layer"] == "block1.inner"][0]
    assert inner["units"] == 8 * 8 * 8  # half of block 1's 16 inner channels kept, 8x8 positions
