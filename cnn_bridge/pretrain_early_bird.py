r"""Early-bird stop of a CNN's dense pre-training (You et al., ICLR'20, "Drawing early-bird tickets").

After every pre-training epoch a :class:`~gnnprune.masks.EarlyBird` monitor observes, per watched
part, the mask pruning would pick then; pre-training ends once every part has settled (the
newest mask within ``threshold`` normalised Hamming distance of each of the window's older ones).
The parts (:class:`WatchedMask`):

* ``channels``: BN-scaling channel masks, as the paper: in every prunable convolution with a
  batch norm, the output channels with the largest :math:`|\gamma|`, a fraction ``1 - f`` of them;
* ``elements``: element masks, in every ``Conv2d`` / ``Linear`` weight the largest :math:`|w|`,
  a fraction ``1 - f``;
* ``regions``: the ReLU region code on a fixed probe batch (the option the spline view of
  early-bird tickets suggests): the sign pattern :math:`[z > 0]` of every batch norm's output, the
  pre-activation of the ReLU that follows it.

Ties are broken by the lower index (:func:`gnnprune.masks.highest`).
"""
from __future__ import annotations

import enum
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gnnprune.masks import EarlyBird, EarlyBirdConfig, highest, kept_count

from .adapters import MASKABLE
from .compact import PrunableLayer


class WatchedMask(str, enum.Enum):
    """A part of a CNN the pre-training monitor watches."""

    CHANNELS = "channels"  # BN-scaling channel masks of the prunable convolutions
    ELEMENTS = "elements"  # magnitude element masks of every conv / linear weight
    REGIONS = "regions"    # ReLU region codes on a probe batch


def _top(scores: Tensor, fraction: float) -> Tensor:
    """Bool mask keeping the largest ``1 - fraction`` of ``scores`` (ties: lower index)."""
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    keep[highest(scores, torch.ones(scores.numel(), dtype=torch.bool), kept_count(scores.numel(), fraction))] = True
    return keep


@torch.no_grad()
def bn_scaling_masks(model: nn.Module, layers: Sequence[PrunableLayer], fraction: float) -> Tensor:
    """``[channels]`` bool: per prunable layer with a batch norm, the channels of largest
    :math:`|\\gamma|`, ``1 - fraction`` of them; the layers' masks concatenated."""
    masks = [_top(model.get_submodule(layer.bn).weight.detach().abs().reshape(-1), fraction)
             for layer in layers if layer.bn is not None]
    return torch.cat(masks) if masks else torch.zeros(0, dtype=torch.bool)


@torch.no_grad()
def magnitude_element_masks(model: nn.Module, fraction: float) -> Tensor:
    """``[weights]`` bool: per ``Conv2d`` / ``Linear`` weight the largest :math:`|w|`,
    ``1 - fraction`` of them; flattened and concatenated in module order."""
    masks = [_top(module.weight.detach().abs().reshape(-1), fraction)
             for module in model.modules() if isinstance(module, MASKABLE)]
    return torch.cat(masks) if masks else torch.zeros(0, dtype=torch.bool)


@torch.no_grad()
def relu_region_codes(model: nn.Module, images: Tensor) -> Tensor:
    """``[codes]`` bool: :math:`[z > 0]` for every output entry of every ``BatchNorm2d`` on
    ``images`` (normalised, ``[B, C, H, W]``), eval mode; flattened and concatenated."""
    codes: list[Tensor] = []
    hooks = [module.register_forward_hook(lambda _m, _i, out: codes.append((out > 0).reshape(-1)))
             for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    was_training = model.training
    model.eval()
    try:
        model(images)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return torch.cat(codes) if codes else torch.zeros(0, dtype=torch.bool)


class PretrainMonitor:
    """Watches a CNN's pre-training; call it after every epoch, stop when it answers true.

    Args:
        config: window and threshold of the monitor.
        watch: the parts watched (at least one).
        layers: the prunable layers (whose batch norms give the channel masks).
        fraction: the pruned fraction the channel and element masks are taken at.
        probe: normalised images ``[B, C, H, W]`` for the region codes (needed with ``regions``).

    Attributes:
        monitor: the :class:`~gnnprune.masks.EarlyBird` behind it (its ``fired_epoch``, ``record``).
    """

    def __init__(self, config: EarlyBirdConfig, watch: Sequence[WatchedMask], layers: Sequence[PrunableLayer],
                 fraction: float, probe: Tensor | None = None) -> None:
        self.watch = tuple(WatchedMask(part) for part in watch)
        if not self.watch:
            raise ValueError("the early-bird monitor needs at least one part to watch")
        if WatchedMask.REGIONS in self.watch and probe is None:
            raise ValueError("ReLU region codes need a probe batch of images")
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"pruned fraction must be in [0, 1), got {fraction}")
        self.layers, self.fraction, self.probe = list(layers), fraction, probe
        self.monitor = EarlyBird(config)

    def masks(self, model: nn.Module) -> dict[str, Tensor]:
        """The watched parts' masks now."""
        build = {WatchedMask.CHANNELS: lambda: bn_scaling_masks(model, self.layers, self.fraction),
                 WatchedMask.ELEMENTS: lambda: magnitude_element_masks(model, self.fraction),
                 WatchedMask.REGIONS: lambda: relu_region_codes(model, self.probe)}
        return {part.value: build[part]() for part in self.watch}

    def __call__(self, model: nn.Module, epoch: int) -> bool:
        """Observe the masks after ``epoch``; whether pre-training should stop now."""
        return self.monitor.observe(epoch, self.masks(model))

    def record(self, epochs: int) -> dict:
        """The monitor's record (``fired_epoch``, ``epochs_saved`` of ``epochs``) and the parts watched."""
        return {**self.monitor.record(epochs), "watch": [part.value for part in self.watch],
                "fraction": self.fraction}
