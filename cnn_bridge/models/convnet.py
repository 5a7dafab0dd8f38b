"""A small ConvNet for 8x8 single-channel digits (tests)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DigitsConvNet(nn.Module):
    """conv 1->16 -> conv 16->32 -> pool -> conv 32->32 -> global pool -> linear.

    Shapes: ``[B, in_channels, 8, 8] -> [B, num_classes]``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.max_pool2d(F.relu(self.bn2(self.conv2(out))), 2)
        out = F.relu(self.bn3(self.conv3(out)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))
