"""Per-layer fractions from accuracy drops, for a MAC target."""

import pytest

from cnn_bridge.allocation import MacModel
from cnn_bridge.compact import prunable_layers
from cnn_bridge.criteria.sensitivity import fractions_within
from cnn_bridge.models import build_cnn_model
from cnn_bridge.sensitivity import sensitivity_fractions


def test_sensitivity_fractions_spare_the_sensitive_layer():
    model = build_cnn_model("convnet", in_channels=1)
    layers = prunable_layers(model, (1, 8, 8))
    macs = MacModel.of(model, layers, (1, 8, 8))
    drops = {"conv1": [0.5, 0.6, 0.7], "conv2": [0.0, 0.0, 0.01], "conv3": [0.0, 0.01, 0.02]}
    fractions, tolerance = sensitivity_fractions(macs, drops, (0.25, 0.5, 0.75), 0.4)
    assert fractions["conv1"] == 0.0
    assert macs.macs(macs.kept_at(fractions)) <= 0.6 * macs.macs()
    # the tolerance rule at the returned tolerance prunes at least as much
    assert all(fractions_within(drops, (0.25, 0.5, 0.75), tolerance)[n] >= f for n, f in fractions.items())


def test_sensitivity_fractions_spread_equal_drops():
    model = build_cnn_model("convnet", in_channels=1)
    macs = MacModel.of(model, prunable_layers(model, (1, 8, 8)), (1, 8, 8))
    drops = {name: [0.0, 0.0, 0.0] for name in ("conv1", "conv2", "conv3")}
    fractions, tolerance = sensitivity_fractions(macs, drops, (0.25, 0.5, 0.75), 0.3)
    assert tolerance == 0.0 and max(fractions.values()) <= 0.5
    with pytest.raises(ValueError, match="cannot reach"):
        sensitivity_fractions(macs, drops, (0.25,), 0.9)
