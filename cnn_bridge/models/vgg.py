"""VGG-16 with batch norm for CIFAR: 13 conv layers, classifier 512 -> 512 -> classes."""
from __future__ import annotations

import torch
from torch import Tensor, nn

VGG16_CHANNELS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    """Shapes: ``[B, in_channels, 32, 32] -> [B, num_classes]``."""

    def __init__(self, channels=VGG16_CHANNELS, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for item in channels:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            layers += [nn.Conv2d(width, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
            width = item
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(width, 512), nn.ReLU(inplace=True), nn.Linear(512, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
