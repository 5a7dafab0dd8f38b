"""Dropout that is cheap on CPU.

``torch.nn.functional.dropout`` draws one ``bernoulli`` float per element from the CPU
generator; on a ``[169_343, 256]`` activation (ogbn-arxiv size) that takes ~0.85 s with
2 threads, more than the graph convolution itself. Here the random bits come in bulk from
one ``int64`` draw per four elements: each 16-bit chunk is a uniform integer (the top bit
of ``random_()``'s ``int64`` is always zero, so the most significant chunk has 15 bits), and
an element is dropped when its chunk falls in the lowest ``round(p * 32768) / 32768`` of its
range.
The result keeps dropout's contract,

.. math::
    y_i = \\frac{m_i\\, x_i}{1 - p}, \\qquad m_i \\sim \\mathrm{Bernoulli}(1 - p),

with ``p`` resolved to a multiple of ``1 / 32768``, and draws from the default generator (so
``torch.manual_seed`` and checkpointed RNG state reproduce it). The mask is kept for the
backward pass as a float of ``0`` / ``1 / (1 - p)`` (multiplying by it is several times faster
than masking with a boolean). Non-CPU tensors use ``torch.nn.functional.dropout``.
"""
from __future__ import annotations

import sys

import torch
from torch import Tensor

_RESOLUTION = 1 << 15
_HIGH_CHUNK = 3 if sys.byteorder == "little" else 0


def drop_mask(shape: torch.Size | tuple[int, ...], p: float) -> Tensor:
    """Boolean ``shape`` tensor, ``True`` (drop) with probability ``p`` independently per element."""
    return keep_scale(shape, p) == 0


def keep_scale(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """``shape`` tensor of ``1 / (1 - p)`` (kept, probability ``1 - p``) and ``0`` (dropped)."""
    numel = 1
    for size in shape:
        numel *= int(size)
    words = torch.empty((numel + 3) // 4, dtype=torch.int64).random_()
    # Each word holds four 16-bit chunks: three uniform on [-2^15, 2^15) and the most significant
    # one, whose top bit is zero, uniform on [0, 2^15). A chunk keeps its element when it is at
    # least its position's threshold; both thresholds drop with probability drops / 2^15.
    drops = round(p * _RESOLUTION)
    threshold = torch.full((4,), float(2 * drops - _RESOLUTION))
    threshold[_HIGH_CHUNK] = drops
    chunks = words.view(torch.int16).float().view(-1, 4)  # float32 holds every 16-bit integer exactly
    keep = chunks.ge_(threshold).view(-1)[:numel]  # 1.0 / 0.0, in place
    return keep.mul_(1.0 / (1.0 - p)).to(dtype).view(shape)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:
        scale = keep_scale(x.shape, p, x.dtype)
        ctx.save_for_backward(scale)
        return x * scale

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (scale,) = ctx.saved_tensors
        return grad_out * scale, None


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Drop each element of ``x`` with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    Args:
        x: any dense tensor.
        p: drop probability in ``[0, 1)``.
        training: identity when ``False``.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0 or x.numel() == 0:
        return x
    if x.device.type != "cpu":
        return torch.nn.functional.dropout(x, p, True)
    return _Dropout.apply(x, p)
