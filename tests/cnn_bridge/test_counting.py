import pytest
import torch
from torch import nn

from cnn_bridge.counting import count_model, layer_counts
from cnn_bridge.models import build_cnn_model, cnn_model_spec


def test_hand_counted_conv_and_linear():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(27, 4))  # 5x5 -> 3x3
    mask = torch.zeros(3, 2, 3, 3, dtype=torch.bool)
    mask[0] = True  # 18 of 54 kept
    counts = count_model(model, (2, 5, 5), {"0": mask})
    assert counts["macs"]["dense"] == 54 * 9 + 27 * 4
    assert counts["macs"]["pruned"] == 18 * 9 + 27 * 4
    assert counts["params"]["dense"] == 54 + 3 + 108 + 4
    assert counts["params"]["pruned"] == 18 + 3 + 108 + 4
    layers = layer_counts(model, (2, 5, 5))
    assert [(c.name, c.positions) for c in layers] == [("0", 9), ("2", 1)]


def test_grouped_and_strided_conv():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2))  # 8x8 -> 4x4
    assert count_model(model, (4, 8, 8))["macs"]["dense"] == 4 * 8 * 9 * 16 // 2


@pytest.mark.parametrize("name,params,macs", [("resnet56", 0.85e6, 125.49e6), ("vgg16_bn", 14.98e6, 313.73e6),
                                              ("resnet50", 25.56e6, 4.11e9), ("resnet20", 0.27e6, 40.81e6)])
def test_published_counts_within_one_percent(name, params, macs):
    counts = count_model(build_cnn_model(name), cnn_model_spec(name).input_shape)
    assert counts["params"]["dense"] == pytest.approx(params, rel=0.01)
    assert counts["macs"]["dense"] == pytest.approx(macs, rel=0.01)


def test_exact_counts():
    counts = count_model(build_cnn_model("resnet56"), (3, 32, 32))
    assert counts["params"]["dense"] == 853018 and counts["macs"]["dense"] == 125485696


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model 'foo'; choose one of resnet20"):
        cnn_model_spec("foo")
