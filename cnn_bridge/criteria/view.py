"""What a criterion sees of one prunable convolution."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

TIE_RTOL = 1e-9
"""Relative tolerance under which two float64 criterion scores of one layer are tied.

Scores that agree to nine significant digits are taken to be one score computed along
different paths (summation orders, BLAS kernels that differ between CPUs, whose rounding is
near 1e-16 relative); ties are broken by channel index, so a ranking is the same on every CPU.
"""


@dataclass(frozen=True)
class LayerView:
    """One prunable convolution and its neighbourhood.

    Attributes:
        name: the convolution's module name.
        conv: the convolution whose output channels are scored (``C`` of them).
        bn: the batch norm right after it, or ``None``.
        consumers: the ``Conv2d`` / ``Linear`` modules that take these channels as input.
        features: activations ``relu(bn(conv(x)))`` on a few batches, shape ``[N, C, H, W]``;
            ``None`` for data-free scoring.
        learned: per-channel importance ``[C]`` learned by a criterion's training phase (``cap``),
            or ``None``.
    """

    name: str
    conv: nn.Conv2d
    bn: nn.BatchNorm2d | None = None
    consumers: tuple[nn.Module, ...] = ()
    features: Tensor | None = None
    learned: Tensor | None = None

    @property
    def channels(self) -> int:
        return self.conv.out_channels

    def require_features(self, criterion: str) -> Tensor:
        if self.features is None:
            raise ValueError(f"criterion {criterion!r} needs feature maps of layer {self.name!r}; none were collected")
        if self.features.shape[1] != self.channels:
            raise ValueError(f"{self.name}: features have {self.features.shape[1]} channels, the conv {self.channels}")
        return self.features

    def require_learned(self, criterion: str) -> Tensor:
        if self.learned is None:
            raise ValueError(f"criterion {criterion!r} needs its training phase's importance of layer {self.name!r}; "
                             "none was learned")
        if self.learned.shape != (self.channels,):
            raise ValueError(f"{self.name}: learned importance has shape {tuple(self.learned.shape)}, "
                             f"the conv {self.channels} channels")
        return self.learned

    def consumer_weights(self) -> list[Tensor]:
        """Every consumer's weight seen per input channel: ``[C_out', C, rest]`` (a ``Linear`` over a
        flattened ``[C, H, W]`` map gets ``rest = H * W``)."""
        weights = []
        for module in self.consumers:
            w = module.weight.detach()
            weights.append(w.reshape(w.shape[0], self.channels, -1))
        return weights


def bn_scale_shift(view: LayerView) -> tuple[Tensor, Tensor]:
    r"""Per-channel affine map of the batch norm in eval mode, ``y = s x + t`` with
    :math:`s = \gamma / \sqrt{\sigma^2 + \epsilon}`, :math:`t = \beta - s \mu` (identity without BN);
    the conv bias, if any, is folded into ``t``. Shapes ``[C]``."""
    c = view.channels
    bias = view.conv.bias.detach() if view.conv.bias is not None else torch.zeros(c)
    if view.bn is None:
        return torch.ones(c), bias
    bn = view.bn
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias.detach() + scale * (bias - bn.running_mean)
