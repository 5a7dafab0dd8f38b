r"""CAP, instance complexity-aware pruning (Wang et al., 2022): per-sample soft channel masks are
learned, and a channel's importance is its mask summed over the data, each sample weighted by how
hard it is, so that channels the hard samples need are kept.

The paper's code is not public; this is built from its description, with these choices:

- **Masks.** Each prunable convolution gets a gate
  :math:`m(x) = \sigma(W \, \mathrm{GAP}(x_\mathrm{in}) + b) \in (0, 1)^C` computed from the
  globally pooled input of the convolution (:class:`ChannelGates`); its output channel ``c`` is
  multiplied by :math:`m_c(x)` after the batch norm (before the ReLU, which commutes with a
  positive scale). :math:`W = 0` and :math:`b = \operatorname{logit}(m_0)` at the start.
- **Training phase.** Only the gates train; the network's weights and batch-norm statistics are
  frozen (eval mode), so removing the gates gives back the pretrained network exactly. The loss is
  cross-entropy plus :math:`\lambda` times the polarisation regulariser of Zhuang et al. (2020)
  applied to every sample's masks of every layer,

  .. math::
      R(m) = \frac{1}{C} \sum_c \bigl( t \, m_c - |m_c - \bar m| \bigr), \qquad \bar m = \tfrac{1}{C} \textstyle\sum_c m_c,

  which pushes masks towards 0 or towards a common high value (averaged over samples and layers).
  Adam on the gate parameters, on the training images (augmented as in fine-tuning).
- **Hardness.** A sample's complexity is :math:`h_n = 1 - p(y_n \mid x_n)` under the pretrained
  (ungated) network: a misclassified or unsure sample counts more, a confidently right one hardly.
- **Importance.** :math:`I_c = \sum_n h_n m_c(x_n) / \sum_n h_n` over ``score_images`` training images
  (uniform weights if every :math:`h_n = 0`); the lowest are pruned first (:func:`cap_importance`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .compact import PrunableLayer
from .data import ImageData, augment, normalise


@dataclass(frozen=True)
class CAPConfig:
    """The CAP training phase.

    Attributes:
        epochs: passes over the training set that train the gates.
        lr: Adam learning rate of the gates.
        batch_size: training batch size.
        polarisation: :math:`\\lambda`, weight of the polarisation regulariser.
        t: :math:`t` of the regulariser (larger pushes more masks to 0).
        init_mask: every mask's value at the start, :math:`m_0 \\in (0, 1)`.
        score_images: training images (not augmented) the importance is summed over.
        augment: random crop and flip of the gate-training images (the run's fine-tuning setting).
        seed: seeds the batch order and augmentation.
    """

    epochs: int = 1
    lr: float = 0.1
    batch_size: int = 128
    polarisation: float = 1.0
    t: float = 1.0
    init_mask: float = 0.9
    score_images: int = 512
    augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.score_images < 1 or self.lr <= 0:
            raise ValueError(f"need epochs, batch_size, score_images >= 1 and lr > 0; got {self}")
        if self.polarisation < 0 or self.t < 0 or not 0 < self.init_mask < 1:
            raise ValueError(f"need polarisation >= 0, t >= 0 and init_mask in (0, 1); got {self}")


class ChannelGates(nn.Module):
    """One gate ``Linear(C_in, C_out)`` per prunable layer; :meth:`attached` applies them to a model.

    Args:
        model: the network (not owned; its modules get hooks only inside :meth:`attached`).
        layers: the prunable layers to gate.
        init_mask: :math:`m_0`, every mask at the start.
    """

    def __init__(self, model: nn.Module, layers: Sequence[PrunableLayer], init_mask: float = 0.9) -> None:
        super().__init__()
        self.layers = tuple(layers)
        convs = [model.get_submodule(layer.conv) for layer in self.layers]
        self.gates = nn.ModuleList(nn.Linear(conv.in_channels, conv.out_channels) for conv in convs)
        with torch.no_grad():
            for gate in self.gates:
                gate.weight.zero_()
                gate.bias.fill_(math.log(init_mask / (1 - init_mask)))

    @contextmanager
    def attached(self, model: nn.Module):
        """Within the block the model's layer outputs are gated; yields a list that receives, per
        forward pass, the masks ``[B, C]`` of every layer (in layer order)."""
        masks: list[list[Tensor]] = []
        current: dict[int, Tensor] = {}
        handles = []

        def gate_from_input(index: int):
            def hook(module, inputs):
                mask = torch.sigmoid(self.gates[index](inputs[0].mean((2, 3))))
                current[index] = mask
                if index == 0:
                    masks.append([])
                masks[-1].append(mask)
            return hook

        for index, layer in enumerate(self.layers):
            handles.append(model.get_submodule(layer.conv).register_forward_pre_hook(gate_from_input(index)))
            after = model.get_submodule(layer.bn or layer.conv)
            handles.append(after.register_forward_hook(
                lambda m, i, o, index=index: o * current[index].unsqueeze(-1).unsqueeze(-1)))
        try:
            yield masks
        finally:
            for handle in handles:
                handle.remove()


def polarisation(mask: Tensor, t: float) -> Tensor:
    """:math:`R(m)` per sample, averaged over samples: ``mask`` is ``[B, C]``."""
    return (t * mask - (mask - mask.mean(1, keepdim=True)).abs()).mean()


def sample_hardness(logits: Tensor, labels: Tensor) -> Tensor:
    """:math:`h_n = 1 - p(y_n \\mid x_n)`, shape ``[N]`` (float64)."""
    return 1.0 - torch.softmax(logits.double(), 1).gather(1, labels.view(-1, 1)).view(-1)


def cap_importance(masks: Tensor, hardness: Tensor) -> Tensor:
    """:math:`I_c = \\sum_n h_n m_{nc} / \\sum_n h_n` from masks ``[N, C]`` and hardness ``[N]`` (float64 ``[C]``)."""
    weights = hardness.double()
    if float(weights.sum()) <= 0:
        weights = torch.ones_like(weights)
    return (weights.view(-1, 1) * masks.double()).sum(0) / weights.sum()


def train_gates(model: nn.Module, gates: ChannelGates, data: ImageData, config: CAPConfig,
                progress: bool = True) -> dict:
    """Train the gates on ``data``'s training split with the model frozen; returns the last epoch's losses."""
    from tqdm.auto import tqdm

    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    model.eval()
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(gates.parameters(), lr=config.lr)
    steps = config.epochs * math.ceil(len(data.train_y) / config.batch_size)
    bar = tqdm(total=steps, desc="cap gates", disable=not progress, leave=False)
    ce_sum = reg_sum = seen = 0.0
    try:
        with gates.attached(model) as masks:
            for _ in range(config.epochs):
                order = torch.randperm(len(data.train_y), generator=generator)
                ce_sum = reg_sum = seen = 0.0
                for begin in range(0, len(order), config.batch_size):
                    index = order[begin:begin + config.batch_size]
                    masks.clear()
                    images = data.train_x[index]
                    if config.augment:
                        images = augment(images, generator)
                    images = normalise(images, data.mean, data.std)
                    ce = F.cross_entropy(model(images), data.train_y[index])
                    reg = torch.stack([polarisation(m, config.t) for m in masks[-1]]).mean()
                    loss = ce + config.polarisation * reg
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    ce_sum += float(ce.detach()) * len(index)
                    reg_sum += float(reg.detach()) * len(index)
                    seen += len(index)
                    bar.update(1)
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        bar.close()
    return {"cross_entropy": ce_sum / max(seen, 1), "polarisation": reg_sum / max(seen, 1)}


@torch.no_grad()
def cap_scores(model: nn.Module, gates: ChannelGates, images: Tensor, labels: Tensor,
               batch_size: int = 256) -> dict[str, Tensor]:
    """``{conv name: importance [C]}`` over normalised ``images`` ``[N, C, H, W]`` with ``labels`` ``[N]``."""
    model.eval()
    hardness = torch.cat([sample_hardness(model(images[i:i + batch_size]), labels[i:i + batch_size])
                          for i in range(0, len(labels), batch_size)])
    per_layer: list[list[Tensor]] = [[] for _ in gates.layers]
    with gates.attached(model) as masks:
        for i in range(0, len(labels), batch_size):
            masks.clear()
            model(images[i:i + batch_size])
            for layer_masks, mask in zip(per_layer, masks[-1]):
                layer_masks.append(mask)
    return {layer.conv: cap_importance(torch.cat(m), hardness) for layer, m in zip(gates.layers, per_layer)}
