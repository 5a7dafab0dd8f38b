r"""RMNet: remove the residual connections of a CIFAR ResNet exactly (Meng et al., "RMNet: Equivalently
removing residual connection from networks"; reference code ``fxmeng/RMNet``, ``models/resnet2vgg.py``).

A basic block computes :math:`y = \mathrm{relu}(\mathrm{BN}_2(W_2 * h) + S x)` with
:math:`h = \mathrm{relu}(\mathrm{BN}_1(W_1 * x))` and a parameter-free shortcut :math:`S`. Its input
:math:`x` is the output of a ReLU, so :math:`x \ge 0` and :math:`\mathrm{relu}(x) = x`. The plain block
(:class:`~cnn_bridge.models.rmnet_cifar.PlainBlock`) carries :math:`x` through its middle layer:

* ``conv1`` gets ``C_in`` extra filters after the block's own ``C_out``: Dirac kernels (1 at the centre
  tap of channel :math:`c`). With kernel 3, padding 1 and stride :math:`s` the centre tap of output
  position :math:`(i, j)` is input position :math:`(s i, s j)`, so these channels are
  :math:`x[:, :, ::s, ::s]`, the subsampling of our option-A shortcut.
* their batch norm passes them through in eval mode: :math:`\gamma = \sqrt{v + \epsilon}`,
  :math:`\beta = \mu`, running mean :math:`\mu`, running variance :math:`v`, where :math:`\mu, v` are the
  channel statistics of :math:`x` (measured on calibration images, as RMNet's ``running1``; 0 and 1
  without them). Any :math:`\mu, v` give the same eval-mode function; measured ones make train-mode
  batch norm start close to it, which fine-tuning after the transform needs.
* ``conv2`` is the block's ``conv2`` with ``bn2`` folded in (:math:`W_2' = W_2 \gamma_2 / \sigma_2`,
  bias :math:`b = \beta_2 - \mu_2 \gamma_2 / \sigma_2`) plus, on the carried channels, the shortcut as a
  centre-tap kernel: the identity when ``C_in = C_out``; for a downsampling block the zero padding is
  the 0/1 matrix :math:`P` with :math:`P_{p + c, c} = 1`, :math:`p = \lfloor (C_{out} - C_{in}) / 2 \rfloor`.
  RMNet's downsampling blocks have a 1x1 conv + BN projection shortcut, which it pads to a 3x3 centre
  tap in the same place; option A is that construction with the fixed projection :math:`P` and no BN.
* the new ``bn2`` adds the folded bias and is otherwise the identity in eval mode, with the statistics
  :math:`\mu_s, v_s` of the block's pre-activation sum: :math:`\gamma = \sqrt{v_s + \epsilon}`,
  :math:`\beta = \mu_s`, running mean :math:`\mu_s - b`, running variance :math:`v_s`.

So the plain network computes the ResNet's function in eval mode up to float rounding.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models.resnet_cifar import BasicBlock, CifarResNet
from .models.rmnet_cifar import PlainCifarNet


#: The plain model (in :data:`cnn_bridge.models.CNN_MODELS`) each ResNet converts into.
PLAIN_MODELS = {"resnet20": "rmnet20", "resnet56": "rmnet56", "resnet110": "rmnet110"}


def _block_depth(resnet: CifarResNet) -> int:
    return 6 * (len(resnet.layers) // 3) + 2


def _centre_tap(out_channels: int, in_channels: int, offset: int = 0) -> Tensor:
    """``[out, in, 3, 3]`` kernel mapping input channel ``c`` to output channel ``offset + c``."""
    kernel = torch.zeros(out_channels, in_channels, 3, 3, dtype=torch.float64)
    channels = torch.arange(in_channels)
    kernel[offset + channels, channels, 1, 1] = 1.0
    return kernel


def _preactivation(block: BasicBlock, x: Tensor) -> Tensor:
    """The block's sum before its last ReLU."""
    return block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x))))) + block.shortcut(x)


@torch.no_grad()
def block_statistics(resnet: CifarResNet, batches: Iterable[Tensor]) -> list[dict[str, Tensor]]:
    """Per block, channel mean and variance (eval mode) of its subsampled input ``x[:, :, ::s, ::s]``
    and of its pre-activation sum, over ``batches`` of normalised images ``[B, C, H, W]``."""
    sums: list[dict[str, list[Tensor]]] = [{"input": [], "sum": []} for _ in resnet.layers]

    def hook(index: int):
        def record(block: BasicBlock, inputs: tuple[Tensor], output: Tensor) -> None:
            x = inputs[0]
            sums[index]["input"].append(x[:, :, ::block.stride, ::block.stride].transpose(0, 1).flatten(1))
            sums[index]["sum"].append(_preactivation(block, x).transpose(0, 1).flatten(1))
        return record

    was_training = resnet.training
    resnet.eval()
    handles = [block.register_forward_hook(hook(i)) for i, block in enumerate(resnet.layers)]
    try:
        for batch in batches:
            resnet(batch)
    finally:
        for handle in handles:
            handle.remove()
        resnet.train(was_training)
    stats = []
    for entry in sums:
        if not entry["input"]:
            raise ValueError("block_statistics needs at least one batch")
        stats.append({name: (torch.cat(values, 1).mean(1), torch.cat(values, 1).var(1, unbiased=False))
                      for name, values in entry.items()})
    return stats


def _pass_through_bn(bn: nn.BatchNorm2d, channels: slice, mean: Tensor, var: Tensor) -> None:
    """Make ``bn`` the identity (eval mode) on ``channels`` with running statistics ``mean, var``."""
    bn.weight[channels] = torch.sqrt(var + bn.eps)
    bn.bias[channels] = mean
    bn.running_mean[channels] = mean
    bn.running_var[channels] = var


@torch.no_grad()
def resnet_to_plain(resnet: CifarResNet, calibration: Iterable[Tensor] | None = None) -> PlainCifarNet:
    """The :class:`~cnn_bridge.models.PlainCifarNet` computing ``resnet``'s eval-mode function.

    Args:
        resnet: a CIFAR ResNet (option-A shortcuts); it is not modified.
        calibration: batches of normalised images whose statistics the pass-through batch norms get
            (see the module docstring); ``None``: mean 0, variance 1.
    Returns:
        the plain network in eval mode; its block ``i`` has ``C_out + C_in`` inner channels, the
        block's own filters first and the carried input channels last.
    """
    if not isinstance(resnet, CifarResNet):
        raise TypeError(f"resnet_to_plain converts a CifarResNet, got {type(resnet).__name__}")
    first = resnet.conv1
    plain = PlainCifarNet(_block_depth(resnet), resnet.fc.out_features, first.in_channels)
    plain = plain.to(dtype=first.weight.dtype, device=first.weight.device).eval()
    stats = None if calibration is None else block_statistics(resnet, calibration)
    plain.conv1.load_state_dict(resnet.conv1.state_dict())
    plain.bn1.load_state_dict(resnet.bn1.state_dict())
    plain.fc.load_state_dict(resnet.fc.state_dict())
    for index, (block, target) in enumerate(zip(resnet.layers, plain.layers)):
        c_in, c_out = block.conv1.in_channels, block.conv1.out_channels
        own, carried = slice(0, c_out), slice(c_out, c_out + c_in)
        if stats is None:
            in_mean, in_var = first.weight.new_zeros(c_in), first.weight.new_ones(c_in)
            sum_mean, sum_var = first.weight.new_zeros(c_out), first.weight.new_ones(c_out)
        else:
            (in_mean, in_var), (sum_mean, sum_var) = stats[index]["input"], stats[index]["sum"]

        target.conv1.weight[own] = block.conv1.weight
        target.conv1.weight[carried] = _centre_tap(c_in, c_in)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(target.bn1, name)[own] = getattr(block.bn1, name)
        _pass_through_bn(target.bn1, carried, in_mean, in_var)
        target.bn1.num_batches_tracked.copy_(block.bn1.num_batches_tracked)

        bn2 = block.bn2
        scale = bn2.weight / torch.sqrt(bn2.running_var + bn2.eps)
        folded_bias = bn2.bias - bn2.running_mean * scale
        target.conv2.weight[:, own] = block.conv2.weight * scale.view(-1, 1, 1, 1)
        target.conv2.weight[:, carried] = _centre_tap(c_out, c_in, block.extra_channels // 2)
        _pass_through_bn(target.bn2, slice(None), sum_mean, sum_var)
        target.bn2.running_mean -= folded_bias
        target.bn2.num_batches_tracked.copy_(bn2.num_batches_tracked)
    return plain
