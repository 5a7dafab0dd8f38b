import math

import pytest
import torch

from gnnprune.dropout import drop_mask, dropout, keep_scale


def _fraction_within(mask: torch.Tensor, p: float, sigmas: float = 6.0) -> bool:
    n = mask.numel()
    return abs(mask.float().mean().item() - p) <= sigmas * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.7])
def test_drop_rate_is_p_at_every_chunk_position(p):
    torch.manual_seed(0)
    mask = drop_mask((400_000,), p)
    # four 16-bit chunks share one int64 word; each position must be unbiased on its own
    for position in range(4):
        assert _fraction_within(mask[position::4], p), position


def test_forward_scales_kept_and_zeroes_dropped_and_backward_uses_the_same_mask():
    torch.manual_seed(1)
    x = torch.rand(300, 17) + 0.5
    x.requires_grad_(True)
    y = dropout(x, 0.4)
    kept = y != 0
    assert torch.allclose(y[kept], x.detach()[kept] / 0.6)
    assert 0.3 < 1 - kept.float().mean().item() < 0.5
    weight = torch.randn(300, 17)
    (y * weight).sum().backward()
    assert torch.allclose(x.grad, torch.where(kept, weight / 0.6, torch.zeros(())))


def test_identity_in_eval_and_at_zero_and_reproducible_under_a_seed():
    x = torch.randn(50, 8)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    torch.manual_seed(3)
    a = dropout(x, 0.5)
    torch.manual_seed(3)
    b = dropout(x, 0.5)
    assert torch.equal(a, b)
    assert not torch.equal(a, dropout(x, 0.5))


def test_odd_sizes_and_empty_tensors():
    torch.manual_seed(0)
    for shape in [(1,), (3,), (5, 3), (7, 1, 2)]:
        y = dropout(torch.ones(shape), 0.5)
        assert y.shape == shape
        assert set(y.unique().tolist()) <= {0.0, 2.0}
    assert dropout(torch.ones(0, 4), 0.5).shape == (0, 4)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_bad_probability_is_refused(p):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        dropout(torch.ones(3), p)


def test_keep_scale_holds_zero_and_the_inverse_keep_probability():
    torch.manual_seed(0)
    scale = keep_scale((10_000,), 0.75, torch.float64)
    assert scale.dtype == torch.float64
    assert set(scale.unique().tolist()) == {0.0, 4.0}
    assert _fraction_within(scale == 0, 0.75)


def test_half_precision_masks_keep_the_rate():
    torch.manual_seed(0)
    scale = keep_scale((200_000,), 0.3, torch.bfloat16)
    assert scale.dtype == torch.bfloat16
    assert _fraction_within(scale == 0, 0.3)
