r"""Output-channel masks of prunable convolutions on the shared mask engine.

Each prunable convolution (:func:`cnn_bridge.compact.prunable_layers`) is a ``channel`` site of a
:class:`~gnnprune.masks.MaskEngine`. A dead channel has its filter, conv bias and batch-norm
:math:`\gamma, \beta` held at exactly zero, so its activation :math:`\mathrm{relu}(0)` is zero
and removing it (:func:`cnn_bridge.compact.compact`) leaves the outputs unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gnnprune.masks import MaskEngine, SiteKind

from .adapters import WeightMasks, register_weight_site
from .compact import PrunableLayer
from .counting import count_model


class ChannelMasks(WeightMasks):
    """Output-channel masks of prunable convolutions, applied to the conv weight and bias *and*
    the batch norm's affine parameters, so a dead channel's activation is exactly zero.

    Args:
        engine: holds one ``channel`` site per layer (see :func:`channel_engine`).
        layers: the prunable layers the sites belong to.
    """

    def __init__(self, engine: MaskEngine, model: nn.Module, layers: Sequence[PrunableLayer]) -> None:
        self.layers = list(layers)
        super().__init__(engine, model)

    def refresh(self) -> None:
        super().refresh()
        self._bns = [(self.model.get_submodule(layer.bn), self.engine.mask(f"{layer.conv}.weight"))
                     for layer in self.layers if layer.bn is not None]

    @torch.no_grad()
    def apply(self) -> None:
        super().apply()
        for bn, live in self._bns:
            bn.weight.mul_(live)
            bn.bias.mul_(live)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        super().mask_gradients()
        for bn, live in self._bns:
            for p in (bn.weight, bn.bias):
                if p.grad is not None:
                    p.grad.mul_(live)

    def counting_masks(self) -> dict[str, Tensor]:
        """Weight masks for exact counts: dead output rows of each pruned conv and the matching
        input slices of its consumers (a ``Linear`` after a flattened map: all positions of the channel)."""
        masks = dict(self.weight_masks())
        for layer in self.layers:
            live = self.engine.mask(f"{layer.conv}.weight")
            for name in layer.consumers:
                w = self.model.get_submodule(name).weight
                cols = live.view(1, -1, 1).expand(w.shape[0], -1, w[0].numel() // (live.numel()))
                mask = cols.reshape(w.shape)
                masks[name] = masks[name] & mask if name in masks else mask
        return masks

    def dead_extras(self) -> int:
        """Parameters outside conv/linear weights that a dead channel also loses: its conv bias and
        batch-norm :math:`\\gamma, \\beta` (counted so the masked count equals the compact model's)."""
        extra = 0
        for layer in self.layers:
            dead = int((~self.engine.mask(f"{layer.conv}.weight")).sum())
            extra += dead * ((self.model.get_submodule(layer.conv).bias is not None) + 2 * (layer.bn is not None))
        return extra

    def count(self, input_shape: tuple[int, ...]) -> dict:
        """:func:`~cnn_bridge.counting.count_model` with exact structured counts (see :meth:`counting_masks`)."""
        counts = count_model(self.model, input_shape, self.counting_masks())
        params = counts["params"]
        params["pruned"] -= self.dead_extras()
        params["ratio"] = params["pruned"] / params["dense"]
        return counts


def channel_engine(model: nn.Module, layers: Sequence[PrunableLayer], keep: dict[str, Tensor] | None = None) -> MaskEngine:
    """A mask engine with one ``channel`` site per prunable layer (all live unless ``keep`` says)."""
    engine = MaskEngine()
    for layer in layers:
        register_weight_site(engine, model, layer.conv, SiteKind.CHANNEL,
                             mask=None if keep is None else keep[layer.conv].clone())
    return engine
