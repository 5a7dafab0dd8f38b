"""Plain (residual-free) CIFAR networks that a CIFAR ResNet converts into exactly
(:func:`cnn_bridge.rmnet.resnet_to_plain`, RMNet, Meng et al.).

Block ``i`` of :class:`PlainCifarNet` is ``relu(bn2(conv2(relu(bn1(conv1(x))))))`` where ``conv1``
has ``out + in`` output channels: the ResNet block's ``out`` filters followed by ``in`` channels that
carry the block input through, so the network has the ResNet's module names and depth and no
additions; every convolution's output channels can be pruned alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PlainBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))))`` with ``conv1: in -> mid`` (stride) and ``conv2: mid -> out``."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class PlainCifarNet(nn.Module):
    """The plain counterpart of :class:`~cnn_bridge.models.CifarResNet` of the same depth.

    Args:
        depth: ``6 n + 2``.
        num_classes: output classes.
        in_channels: image channels.
    Shapes:
        ``[B, in_channels, 32, 32] -> [B, num_classes]``; block ``i`` maps ``C_in`` channels to
        ``C_out`` through ``C_out + C_in`` inner channels.
    """

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR plain net depth must be 6n + 2 with n >= 1, got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, width = [], 16
        for stage, out in enumerate((16, 32, 64)):
            for b in range(blocks):
                layers.append(PlainBlock(width, out + width, out, 2 if stage and b == 0 else 1))
                width = out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))
