r"""Block removal in CIFAR ResNets, guided by the class modularity of the block outputs.

Lu et al. (ECCV'22) observe that the class modularity :math:`Q_b` of block outputs
(:func:`cnn_bridge.layer_analysis.modularity`) rises through a trained network and flattens once
the classes are separated; blocks that add little modularity are redundant. Rule used here: with
:math:`Q_0` the stem's modularity and :math:`\Delta Q_b = Q_b - Q_{b-1}`, remove the ``n``
*removable* blocks of smallest :math:`\Delta Q_b` (ties to the lower index). A block is removable
when its shortcut is the identity (stride 1, as many output as input channels): dropping it leaves
the identity map, so the network stays valid; downsampling blocks are kept. The baseline removes
``n`` removable blocks drawn uniformly at random.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

from torch import nn

from .models.resnet_cifar import CifarResNet


def removable_blocks(model: CifarResNet) -> list[int]:
    """Indices (0-based, into ``model.layers``) of blocks whose shortcut is the identity."""
    return [i for i, block in enumerate(model.layers)
            if not isinstance(block, nn.Identity) and block.stride == 1 and block.extra_channels == 0]


def remove_blocks(model: CifarResNet, indices: Sequence[int]) -> CifarResNet:
    """Replace the blocks at ``indices`` by the identity, in place (``ValueError`` for a block that
    cannot be removed)."""
    allowed = set(removable_blocks(model))
    for index in indices:
        if index not in allowed:
            raise ValueError(f"block {index} cannot be removed (downsampling, or already removed)")
        model.layers[index] = nn.Identity()
    return model


def modularity_gains(curve: Sequence[float]) -> list[float]:
    """``[Q_1 - Q_0, ..., Q_B - Q_{B-1}]`` from the curve ``[Q_0 (stem), Q_1, ..., Q_B]``."""
    return [after - before for before, after in zip(curve[:-1], curve[1:])]


def modularity_guided_blocks(curve: Sequence[float], removable: Sequence[int], n: int) -> list[int]:
    """The ``n`` removable blocks with the smallest modularity gain, sorted by index."""
    _check_count(removable, n)
    gains = modularity_gains(curve)
    return sorted(sorted(removable, key=lambda i: (gains[i], i))[:n])


def random_blocks(removable: Sequence[int], n: int, seed: int) -> list[int]:
    """``n`` removable blocks drawn uniformly at random (seeded), sorted by index."""
    _check_count(removable, n)
    return sorted(random.Random(seed).sample(list(removable), n))


def weight_depth(model: nn.Module) -> int:
    """Convolution and linear layers on the model's path (its depth in the ResNet sense)."""
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


def _check_count(removable: Sequence[int], n: int) -> None:
    if not 1 <= n <= len(removable):
        raise ValueError(f"can remove 1 to {len(removable)} blocks, asked for {n}")
