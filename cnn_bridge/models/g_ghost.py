r"""G-Ghost CIFAR ResNet (Han et al., 2022, "GhostNets on Heterogeneous Devices via Cheap
Operations"), following the stage of ``g_ghost_pytorch/g_ghost_regnet.py`` in
huawei-noah/Efficient-AI-Backbones, with the CIFAR ResNet's basic blocks.

A C-Ghost module (:mod:`.ghost`) makes cheap channels inside every convolution; a G-Ghost *stage*
makes them across the stage, which keeps every remaining convolution dense (fast on GPUs and
CPUs alike). A stage of :math:`n \ge 3` blocks with ``C`` output channels and cheap ratio
:math:`\lambda`:

* the first block (``base``, with the stage's stride) makes all ``C`` channels :math:`x_0`;
* the *complicated* path: the first :math:`r = C - \lceil \lambda C \rceil` channels of
  :math:`x_0` go through the :math:`n - 2` middle blocks, all of width ``r``: :math:`e`;
* the *ghost* path: the other :math:`C - r` channels of :math:`x_0` pass through a cheap
  :math:`1 \times 1` convolution and batch norm, plus a *mix* term
  :math:`m = \mathrm{BN}(W_2\,\mathrm{ReLU}(\mathrm{BN}(W_1\,\mathrm{pool}([x_0, e_1, \ldots, e_{n-2}]))))`
  from the globally pooled outputs of every block of the complicated path (it restores the
  information the cheap path lacks): :math:`c = \mathrm{ReLU}(\mathrm{cheap}(x_0^{(r:)}) + m)`;
* the last block (``end``) takes :math:`[e, c]` (``C`` channels).

A stage of fewer than 3 blocks stays plain. The middle blocks cost about :math:`(1 - \lambda)^2`
of their dense MACs; with :math:`\lambda = 0.5` the blocks of ResNet-56 (9 per stage) keep 0.42 of
their MACs and those of ResNet-20 (3 per stage) 0.75. The stem, shortcuts and classifier are the
CIFAR ResNet's.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .resnet_cifar import BasicBlock, CifarResNet


class GGhostStage(nn.Module):
    """One G-Ghost stage of ``blocks >= 3`` basic blocks.

    Args:
        in_channels, out_channels: the stage's input and output channels ``C``.
        blocks: ``n``, basic blocks in the dense stage this one replaces.
        stride: stride of the first block.
        cheap_ratio: :math:`\\lambda`, fraction of ``C`` made by the cheap path (``0 < λ < 1``).
    Shapes:
        ``[B, in_channels, H, W] -> [B, out_channels, H / stride, W / stride]``.
    """

    def __init__(self, in_channels: int, out_channels: int, blocks: int, stride: int = 1,
                 cheap_ratio: float = 0.5) -> None:
        super().__init__()
        if blocks < 3:
            raise ValueError(f"a G-Ghost stage needs at least 3 blocks, got {blocks}")
        if not 0.0 < cheap_ratio < 1.0:
            raise ValueError(f"cheap_ratio must be in (0, 1), got {cheap_ratio}")
        cheap = math.ceil(cheap_ratio * out_channels)
        self.raw_channels = raw = out_channels - cheap
        if raw < 1:
            raise ValueError(f"cheap_ratio {cheap_ratio} leaves no complicated channel of {out_channels}")
        self.base = BasicBlock(in_channels, out_channels, stride)
        self.middle = nn.ModuleList(BasicBlock(raw, raw) for _ in range(blocks - 2))
        self.cheap = nn.Sequential(nn.Conv2d(cheap, cheap, 1, bias=False), nn.BatchNorm2d(cheap))
        self.mix = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                 nn.Conv2d(out_channels + raw * (blocks - 2), cheap, 1, bias=False),
                                 nn.BatchNorm2d(cheap), nn.ReLU(),
                                 nn.Conv2d(cheap, cheap, 1, bias=False), nn.BatchNorm2d(cheap))
        self.end = BasicBlock(out_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x0 = self.base(x)
        e, outputs = x0[:, :self.raw_channels], [x0]
        for block in self.middle:
            e = block(e)
            outputs.append(e)
        c = torch.relu(self.cheap(x0[:, self.raw_channels:]) + self.mix(torch.cat(outputs, 1)))
        return self.end(torch.cat([e, c], 1))


class GGhostCifarResNet(CifarResNet):
    """CIFAR ResNet of ``depth = 6 n + 2`` whose stages (``n >= 3``) are :class:`GGhostStage` s.

    Args:
        depth: 20, 56, ... (``n = (depth - 2) / 6`` blocks per stage).
        cheap_ratio: :math:`\\lambda` of every stage.
    Shapes:
        ``[B, in_channels, 32, 32] -> [B, num_classes]``.
    """

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, cheap_ratio: float = 0.5) -> None:
        super().__init__(depth, num_classes, in_channels)
        blocks = (depth - 2) // 6
        if blocks < 3:
            raise ValueError(f"G-Ghost stages need at least 3 blocks per stage (depth >= 20), got depth {depth}")
        stages, width = [], 16
        for stage, out in enumerate((16, 32, 64)):
            stages.append(GGhostStage(width, out, blocks, 2 if stage else 1, cheap_ratio))
            width = out
        self.layers = nn.Sequential(*stages)
        for module in self.layers.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
