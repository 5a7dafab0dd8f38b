r"""Exact parameter and multiply-accumulate (MAC) counts at batch 1, dense and masked.

A convolution producing ``H_out x W_out`` positions costs

.. math::
    \mathrm{MACs} = \frac{C_\mathrm{in} C_\mathrm{out} k_h k_w}{g} H_\mathrm{out} W_\mathrm{out}
    = |W| \cdot H_\mathrm{out} W_\mathrm{out},

and a linear layer ``|W|``. With a mask only kept weights count:
``kept(W) * H_out * W_out``. Biases, batch norm, pooling and additions are not counted as MACs
(the usual convention of the published CIFAR/ImageNet figures). Parameters are all parameters
of the model; masked counts subtract the dead weights.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class LayerCount:
    """Counts of one conv/linear layer (``positions`` = output positions per image, 1 for linear)."""

    name: str
    weights: int
    kept_weights: int
    positions: int

    @property
    def macs(self) -> int:
        return self.weights * self.positions

    @property
    def kept_macs(self) -> int:
        return self.kept_weights * self.positions


def output_positions(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Output positions ``H_out * W_out`` of every ``Conv2d`` (1 for ``Linear``) at batch 1, in model order.

    Shapes are propagated on the ``meta`` device (a copy of the model), so nothing is computed.
    """
    shadow = copy.deepcopy(model).to("meta").eval()
    positions: dict[str, int] = {}
    handles = []
    for name, module in shadow.named_modules():
        if isinstance(module, nn.Conv2d):
            positions[name] = 0
            hook = lambda m, i, o, name=name: positions.__setitem__(name, o.shape[-1] * o.shape[-2])  # noqa: E731
            handles.append(module.register_forward_hook(hook))
        elif isinstance(module, nn.Linear):
            positions[name] = 1
    with torch.no_grad():
        shadow(torch.zeros(1, *input_shape, device="meta"))
    return positions


def layer_counts(model: nn.Module, input_shape: tuple[int, ...],
                 weight_masks: dict[str, Tensor] | None = None) -> list[LayerCount]:
    """One :class:`LayerCount` per conv/linear layer.

    Args:
        weight_masks: ``{module name: bool mask shaped like its weight}``; unmasked layers are dense.
    """
    weight_masks = weight_masks or {}
    counts = []
    for name, positions in output_positions(model, input_shape).items():
        weight = model.get_submodule(name).weight
        mask = weight_masks.get(name)
        kept = weight.numel() if mask is None else int(mask.expand_as(weight).sum())
        counts.append(LayerCount(name, weight.numel(), kept, positions))
    return counts


def count_model(model: nn.Module, input_shape: tuple[int, ...],
                weight_masks: dict[str, Tensor] | None = None) -> dict:
    """Parameters and MACs, dense and with masks.

    Returns:
        ``{"params": {"dense", "pruned", "ratio"}, "macs": {"dense", "pruned", "ratio"}}``.
    """
    layers = layer_counts(model, input_shape, weight_masks)
    params = sum(p.numel() for p in model.parameters())
    dead = sum(layer.weights - layer.kept_weights for layer in layers)
    macs = sum(layer.macs for layer in layers)
    kept_macs = sum(layer.kept_macs for layer in layers)
    return {
        "params": {"dense": params, "pruned": params - dead, "ratio": (params - dead) / params},
        "macs": {"dense": macs, "pruned": kept_macs, "ratio": kept_macs / macs},
    }
