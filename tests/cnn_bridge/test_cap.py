"""CAP: hardness-weighted importance on a hand-computed two-sample case, the polarisation
regulariser, and the gate-training phase leaving the network untouched."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnn_bridge.cap import (CAPConfig, ChannelGates, cap_importance, cap_scores, polarisation, sample_hardness,
                            train_gates)
from cnn_bridge.compact import PrunableLayer, prunable_layers
from cnn_bridge.criteria import LayerView, cap
from cnn_bridge.data import load_digits
from cnn_bridge.models import build_cnn_model


class OneConv(nn.Module):
    """conv 1 -> 2 (1x1), batch norm, ReLU, global pool, linear 2 -> 2."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.bn(self.conv(x))), 1).flatten(1))


def sigmoid(z):
    return 1 / (1 + math.exp(-z))


def test_importance_on_two_hand_computed_samples():
    model = OneConv().eval()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([math.log(3.0), 0.0]))  # p(class 0) = 3/4 for every input
    layer = PrunableLayer("conv", "bn", ("fc",))
    gates = ChannelGates(model, [layer])
    with torch.no_grad():
        gates.gates[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        gates.gates[0].bias.zero_()
    images = torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 2.0)])  # pooled inputs 1 and 2
    labels = torch.tensor([0, 1])
    # hardness 1 - p(y): 1/4 (label 0) and 3/4 (label 1); masks sigma(+-1), sigma(+-2)
    h1, h2 = 0.25, 0.75
    expected = [(h1 * sigmoid(1) + h2 * sigmoid(2)) / (h1 + h2), (h1 * sigmoid(-1) + h2 * sigmoid(-2)) / (h1 + h2)]
    scores = cap_scores(model, gates, images, labels)
    assert torch.allclose(scores["conv"], torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-6)
    # the hard sample (label 1) dominates: without hardness weights channel 0 would score (sigma(1) + sigma(2)) / 2
    assert abs(float(scores["conv"][0]) - (sigmoid(1) + sigmoid(2)) / 2) > 0.01
    view = LayerView("conv", model.conv, model.bn, (model.fc,), learned=scores["conv"])
    assert torch.equal(cap(view), scores["conv"])


def test_gated_forward_multiplies_channels_by_the_masks():
    model = OneConv().eval()
    layer = PrunableLayer("conv", "bn", ("fc",))
    gates = ChannelGates(model, [layer], init_mask=0.25)
    x = torch.randn(3, 1, 4, 4)
    with torch.no_grad():
        plain = F.relu(model.bn(model.conv(x)))
        with gates.attached(model) as masks:
            gated = F.relu(model.bn(model.conv(x)))
    assert torch.allclose(masks[-1][0], torch.full((3, 2), 0.25))
    assert torch.allclose(gated, 0.25 * plain, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(F.relu(model.bn(model.conv(x))), plain)  # hooks removed on exit


def test_hardness_polarisation_and_uniform_fallback():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    assert torch.allclose(sample_hardness(logits, torch.tensor([0, 0])), torch.tensor([0.5, 0.25], dtype=torch.float64))
    # t m_c - |m_c - mean| with mean 0.5: (0 - 0.5) and (0.5 - 0.5), averaged
    assert float(polarisation(torch.tensor([[0.0, 1.0]]), t=0.5)) == pytest.approx(-0.25)
    masks = torch.tensor([[0.2, 0.4], [0.6, 0.8]])
    assert torch.allclose(cap_importance(masks, torch.zeros(2)), torch.tensor([0.4, 0.6], dtype=torch.float64))


def test_criterion_needs_the_training_phase():
    conv = nn.Conv2d(1, 2, 1)
    with pytest.raises(ValueError, match="training phase"):
        cap(LayerView("conv", conv))
    with pytest.raises(ValueError, match="shape"):
        cap(LayerView("conv", conv, learned=torch.ones(3)))


def test_gate_training_leaves_the_network_untouched():
    torch.manual_seed(0)
    data = load_digits().subset(256, 64)
    model = build_cnn_model("convnet")
    layers = prunable_layers(model, (1, 8, 8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gates = ChannelGates(model, layers)
    start = [g.bias.clone() for g in gates.gates]
    losses = train_gates(model, gates, data, CAPConfig(epochs=1, batch_size=64, augment=False), progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())
    assert any(not torch.equal(g.bias, s) for g, s in zip(gates.gates, start))
    assert math.isfinite(losses["cross_entropy"])
