"""Channel masks hold a dead channel's filter and batch-norm parameters at zero."""

import torch

from cnn_bridge.channel_masks import ChannelMasks, channel_engine
from cnn_bridge.compact import prunable_layers
from cnn_bridge.data import load_digits
from cnn_bridge.models import build_cnn_model
from cnn_bridge.train import CNNTrainConfig, train_cnn


def test_dead_channels_stay_zero_through_training():
    data = load_digits().subset(200, 50)
    model = build_cnn_model("convnet", in_channels=1)
    layers = prunable_layers(model, (1, 8, 8))
    keep = {layer.conv: torch.arange(model.get_submodule(layer.conv).out_channels) % 2 == 0 for layer in layers}
    masks = ChannelMasks(channel_engine(model, layers, keep), model, layers)
    train_cnn(model, data, CNNTrainConfig(epochs=1, batch_size=50, augment=False), masks, progress=False)
    for layer in layers:
        dead = ~keep[layer.conv]
        assert model.get_submodule(layer.conv).weight[dead].abs().sum() == 0
        assert model.get_submodule(layer.bn).weight[dead].abs().sum() == 0
        assert model.get_submodule(layer.bn).bias[dead].abs().sum() == 0
