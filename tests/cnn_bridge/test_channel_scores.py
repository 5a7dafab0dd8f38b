"""Features the data-driven criteria see."""
import torch

from cnn_bridge.compact import prunable_layers
from cnn_bridge.models import build_cnn_model
from cnn_bridge.channel_scores import collect_features

SHAPE = (3, 32, 32)


def test_collected_features_are_post_activation_maps():
    torch.manual_seed(0)
    model = build_cnn_model("vgg16_bn").eval()
    layers = prunable_layers(model, SHAPE)[:2]
    x = torch.randn(3, *SHAPE)
    features = collect_features(model, layers, [x[:2], x[2:]])
    with torch.no_grad():
        first = torch.relu(model.features[1](model.features[0](x)))
    assert features["features.0"].shape == (3, 64, 32, 32)
    assert torch.allclose(features["features.0"], first, atol=1e-5)
    assert features["features.3"].min() >= 0
