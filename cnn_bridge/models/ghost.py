r"""Ghost-ResNet for CIFAR (Han et al., 2020, "GhostNet: More Features from Cheap Operations"),
following the reference ``ghostnet_pytorch/ghost_resnet.py`` of huawei-noah/Efficient-AI-Backbones.

A :class:`GhostConv` replaces a ``C_in -> C`` convolution: a primary convolution (same kernel,
stride and padding) makes :math:`m = \lceil C / s \rceil` *intrinsic* channels, and a cheap
depthwise :math:`d \times d` convolution makes :math:`(s - 1)` ghost channels from each of them;
the first ``C`` of the concatenation ``[intrinsic, ghosts]`` are the output. As in the reference,
the cheap convolution follows the primary one directly (no batch norm or ReLU in between) and the
batch norm and ReLU of the replaced convolution follow the module. With ``H_out W_out`` output
positions its MACs are

.. math::
    m \, C_\mathrm{in} k^2 \, H_\mathrm{out} W_\mathrm{out} + (s - 1) \, m \, d^2 \, H_\mathrm{out} W_\mathrm{out}
    \approx \tfrac{1}{s} \cdot C \, C_\mathrm{in} k^2 H_\mathrm{out} W_\mathrm{out},

(ghost channels beyond ``C`` are computed and dropped when ``s`` does not divide ``C``).
Ghost-ResNet-20/56 (:class:`GhostCifarResNet`) is the CIFAR ResNet of :mod:`.resnet_cifar` with
both convolutions of every basic block replaced (``s = 2, d = 3`` by default, the paper's CIFAR
setting); the stem convolution, the zero-padding shortcuts and the classifier are unchanged.
At ``s = 2`` it is "born" with about half the MACs, the budget of a 50%-MAC pruned ResNet.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .resnet_cifar import BasicBlock, CifarResNet


class GhostConv(nn.Module):
    """Ghost module in place of ``nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)``.

    Args:
        ratio: ``s``, output channels per intrinsic channel (``>= 1``; 1 is a plain convolution).
        cheap_kernel: ``d``, kernel size of the depthwise cheap convolution (odd).
    Shapes:
        ``[B, in_channels, H, W] -> [B, out_channels, H_out, W_out]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1,
                 ratio: int = 2, cheap_kernel: int = 3) -> None:
        super().__init__()
        if ratio < 1 or cheap_kernel < 1 or cheap_kernel % 2 == 0:
            raise ValueError(f"need ratio >= 1 and an odd cheap kernel, got ratio={ratio}, cheap_kernel={cheap_kernel}")
        self.out_channels = out_channels
        self.intrinsic = math.ceil(out_channels / ratio)
        self.primary = nn.Conv2d(in_channels, self.intrinsic, kernel_size, stride, padding, bias=False)
        ghosts = self.intrinsic * (ratio - 1)
        self.cheap = (nn.Conv2d(self.intrinsic, ghosts, cheap_kernel, 1, cheap_kernel // 2, groups=self.intrinsic,
                                bias=False) if ghosts else None)

    def forward(self, x: Tensor) -> Tensor:
        intrinsic = self.primary(x)
        if self.cheap is None:
            return intrinsic
        return torch.cat([intrinsic, self.cheap(intrinsic)], 1)[:, :self.out_channels]


def ghost_conv_macs(in_channels: int, out_channels: int, kernel_size: int, positions: int, ratio: int = 2,
                    cheap_kernel: int = 3) -> int:
    """MACs of one :class:`GhostConv` at batch 1 with ``positions = H_out * W_out`` (formula above)."""
    intrinsic = math.ceil(out_channels / ratio)
    return intrinsic * in_channels * kernel_size ** 2 * positions + (ratio - 1) * intrinsic * cheap_kernel ** 2 * positions


class GhostCifarResNet(CifarResNet):
    """CIFAR ResNet of ``depth = 6 n + 2`` whose basic-block convolutions are :class:`GhostConv` modules.

    Args:
        depth: 20, 56, ...
        ratio, cheap_kernel: ``s`` and ``d`` of every Ghost module.
    Shapes:
        ``[B, in_channels, 32, 32] -> [B, num_classes]``.
    """

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, ratio: int = 2,
                 cheap_kernel: int = 3) -> None:
        super().__init__(depth, num_classes, in_channels)
        for block in self.layers:
            block: BasicBlock
            block.conv1 = GhostConv(block.conv1.in_channels, block.conv1.out_channels, 3, block.stride, 1, ratio,
                                    cheap_kernel)
            block.conv2 = GhostConv(block.conv2.in_channels, block.conv2.out_channels, 3, 1, 1, ratio, cheap_kernel)
        for module in self.layers.modules():
            if isinstance(module, nn.Conv2d) and module.groups == 1:
                nn.init.kaiming_normal_(module.weight)
