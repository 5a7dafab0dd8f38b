"""Mini-batch SGD training of a CNN with fixed weight masks (one loop for every variant)."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .adapters import WeightMasks
from .data import ImageData, augment, normalise


@dataclass(frozen=True)
class CNNTrainConfig:
    """SGD with Nesterov momentum and a cosine learning rate per step.

    Attributes:
        epochs: passes over the training set.
        batch_size: training batch size.
        lr: peak learning rate (after ``warmup_steps`` linear warm-up).
        momentum, weight_decay: SGD settings.
        warmup_steps: linear warm-up steps.
        augment: pad-4 random crop + horizontal flip (CIFAR); off for 8x8 digits.
        seed: seeds initialisation, batch order and augmentation.
        eval_batch_size: batch size for evaluation.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 0
    augment: bool = True
    seed: int = 0
    eval_batch_size: int = 500

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs, batch_size and eval_batch_size must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"need lr > 0, weight_decay >= 0, 0 <= momentum < 1; got {self}")


def learning_rate(step: int, total: int, peak: float, warmup: int = 0) -> float:
    r"""Linear warm-up to ``peak``, then cosine decay to 0 at ``total``:
    :math:`\eta_t = \eta \tfrac{1}{2}(1 + \cos(\pi \tfrac{t - t_w}{T - t_w}))`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


@torch.no_grad()
def evaluate_cnn(model: nn.Module, images: Tensor, labels: Tensor, mean, std, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` on ``uint8`` images ``[N, C, H, W]``."""
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = model(normalise(images[start:start + batch_size], mean, std))
        correct += int((logits.argmax(1) == labels[start:start + batch_size]).sum())
    return correct / len(labels)


def train_cnn(model: nn.Module, data: ImageData, config: CNNTrainConfig, masks: WeightMasks | None = None,
              progress: bool = True, description: str = "train",
              stop_after: Callable[[nn.Module, int], bool] | None = None) -> dict:
    """Train ``model`` in place; masked weights are zero from the start and stay zero.

    Args:
        stop_after: asked after every epoch ``e`` (0-based) with the model; training ends when it
            answers true (an early-bird monitor, :mod:`cnn_bridge.pretrain_early_bird`). The
            learning-rate schedule stays the one of ``config.epochs``.

    Returns:
        ``{"test_accuracy", "final_loss", "train_time_s", "eval_time_s", "epochs_run"}``.
    """
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=config.momentum > 0)
    if masks is not None:
        masks.apply()
    steps_per_epoch = math.ceil(len(data.train_y) / config.batch_size)
    total = config.epochs * steps_per_epoch
    bar = tqdm(total=total, desc=description, disable=not progress, leave=False)
    start, step, loss_sum, seen, epochs_run = time.perf_counter(), 0, 0.0, 0, 0
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(data.train_y), generator=generator)
        loss_sum, seen = 0.0, 0
        for begin in range(0, len(order), config.batch_size):
            index = order[begin:begin + config.batch_size]
            images = data.train_x[index]
            if config.augment:
                images = augment(images, generator)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total, config.lr, config.warmup_steps)
            loss = F.cross_entropy(model(normalise(images, data.mean, data.std)), data.train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if masks is not None:
                masks.mask_gradients()
            optimizer.step()
            if masks is not None:
                masks.apply()
            loss_sum += loss.item() * len(index)
            seen += len(index)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
        epochs_run = epoch + 1
        if stop_after is not None and stop_after(model, epoch):
            break
    bar.close()
    train_time = time.perf_counter() - start
    start = time.perf_counter()
    test_accuracy = evaluate_cnn(model, data.test_x, data.test_y, data.mean, data.std, config.eval_batch_size)
    eval_time = time.perf_counter() - start
    return {"test_accuracy": test_accuracy, "final_loss": loss_sum / max(seen, 1),
            "train_time_s": train_time, "eval_time_s": eval_time, "epochs_run": epochs_run}
