"""Mini-batch SGD training of a CNN with fixed weight masks (one loop for every variant).

The CPU recipe: bf16 autocast for the forward/backward pass (weights, gradients and the
optimizer stay fp32; evaluation is fp32), optionally channels-last tensors, a cosine or
one-cycle learning rate per step, pad-4 crop + flip augmentation (cutout optional), and an
atomic checkpoint after every epoch from which :func:`train_cnn` resumes exactly.
"""
from __future__ import annotations

import contextlib
import enum
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from gnnprune.io import atomic_torch_save, safe_torch_load

from .adapters import WeightMasks
from .data import ImageData, augment, cutout, normalise


class Precision(str, enum.Enum):
    """Arithmetic of the training forward/backward pass (parameters and optimizer are fp32 always)."""

    FP32 = "fp32"
    BF16 = "bf16"  #: CPU autocast to bfloat16


class Schedule(str, enum.Enum):
    """Learning-rate schedule per step (see :func:`learning_rate`)."""

    COSINE = "cosine"
    ONE_CYCLE = "one-cycle"


@dataclass(frozen=True)
class CNNTrainConfig:
    """SGD with Nesterov momentum and a per-step learning rate schedule.

    Attributes:
        epochs: passes over the training set.
        batch_size: training batch size.
        lr: peak learning rate (after ``warmup_steps`` of warm-up).
        momentum, weight_decay: SGD settings.
        warmup_steps: warm-up steps (linear from ``lr / warmup_steps`` for cosine, from ``lr / 25``
            for one-cycle, where 0 means 30% of the steps).
        augment: pad-4 random crop + horizontal flip (CIFAR); off for 8x8 digits.
        seed: seeds initialisation, batch order and augmentation.
        eval_batch_size: batch size for evaluation.
        precision: fp32, or bf16 autocast of the training forward/backward pass.
        channels_last: hold the model and the training batches in channels-last memory format.
        schedule: cosine (with linear warm-up) or one-cycle (linear up, then linear down to 0).
        label_smoothing: cross-entropy label smoothing in ``[0, 1)``.
        cutout: side in pixels of the square :func:`~cnn_bridge.data.cutout` zeroes in every
            normalised training image (0: none; DeVries & Taylor use 16 on CIFAR-10).
        max_steps: stop after this many optimizer steps (``None``: all ``epochs``); the schedule
            is laid out over ``min(max_steps, epochs * steps_per_epoch)`` steps.
        eval_every_epoch: evaluate on the test split after every epoch (logged in ``history``).
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
    precision: Precision = Precision.FP32
    channels_last: bool = False
    schedule: Schedule = Schedule.COSINE
    label_smoothing: float = 0.0
    cutout: int = 0
    max_steps: int | None = None
    eval_every_epoch: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs, batch_size and eval_batch_size must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"need lr > 0, weight_decay >= 0, 0 <= momentum < 1; got {self}")
        if not 0 <= self.label_smoothing < 1 or self.warmup_steps < 0:
            raise ValueError("need 0 <= label_smoothing < 1 and warmup_steps >= 0")
        if self.cutout < 0:
            raise ValueError(f"cutout must be >= 0 (0: off), got {self.cutout}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps}")
        object.__setattr__(self, "precision", Precision(self.precision))
        object.__setattr__(self, "schedule", Schedule(self.schedule))

    def total_steps(self, train_size: int) -> int:
        """Optimizer steps of the whole run on ``train_size`` images."""
        total = self.epochs * math.ceil(train_size / self.batch_size)
        return total if self.max_steps is None else min(total, self.max_steps)

    def record(self) -> dict:
        """The settings as plain JSON values (enums by value)."""
        return {key: value.value if isinstance(value, enum.Enum) else value for key, value in asdict(self).items()}


def _cosine(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _one_cycle(step: int, total: int, peak: float, warmup: int) -> float:
    rise = warmup if warmup > 0 else max(1, round(0.3 * total))
    start = peak / 25.0
    if step < rise:
        return start + (peak - start) * step / rise
    return peak * max(0.0, 1.0 - (step - rise) / max(1, total - rise))


_SCHEDULES: dict[Schedule, Callable[[int, int, float, int], float]] = {
    Schedule.COSINE: _cosine, Schedule.ONE_CYCLE: _one_cycle}


def learning_rate(step: int, total: int, peak: float, warmup: int = 0, schedule: Schedule = Schedule.COSINE) -> float:
    r"""The learning rate at ``step`` of ``total``.

    Cosine: linear warm-up to ``peak``, then :math:`\eta_t = \eta \tfrac{1}{2}(1 + \cos(\pi \tfrac{t - t_w}{T - t_w}))`.
    One-cycle: linear from :math:`\eta / 25` to :math:`\eta` over :math:`t_w` steps (30% of ``total`` when
    ``warmup`` is 0), then linear to 0 at ``total``.
    """
    return _SCHEDULES[Schedule(schedule)](step, total, peak, warmup)


@torch.no_grad()
def evaluate_cnn(model: nn.Module, images: Tensor, labels: Tensor, mean, std, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` on ``uint8`` images ``[N, C, H, W]`` (fp32, eval mode)."""
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = model(normalise(images[start:start + batch_size], mean, std))
        correct += int((logits.argmax(1) == labels[start:start + batch_size]).sum())
    return correct / len(labels)


def _autocast(precision: Precision):
    if precision is Precision.BF16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


CHECKPOINT_FILE = "checkpoint.pt"


def save_training_state(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        generator: torch.Generator, epoch: int, step: int, history: list[dict],
                        config: CNNTrainConfig) -> None:
    """Write the state after ``epoch`` (1-based, completed) atomically: model, optimizer, generator, history."""
    atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "generator": generator.get_state(), "epoch": epoch, "step": step,
                       "history": history, "config": config.record()}, path)


def _check_resumable(saved: dict, config: CNNTrainConfig, path: Path) -> None:
    for key in ("model", "optimizer", "generator", "epoch", "step", "history", "config"):
        if key not in saved:
            raise ValueError(f"{path}: not a training checkpoint (no {key!r})")
    mine, defaults = config.record(), CNNTrainConfig().record()  # a setting added later: its default
    differ = [key for key in mine if key not in ("epochs", "eval_batch_size", "eval_every_epoch")
              and saved["config"].get(key, defaults[key]) != mine[key]]
    if differ:
        raise ValueError(f"{path}: was written with other settings ({', '.join(differ)}); resume with the same ones")
    if saved["config"].get("epochs") != config.epochs:
        raise ValueError(f"{path}: written for {saved['config'].get('epochs')} epochs, not {config.epochs} "
                         "(the schedule depends on it)")


@torch.no_grad()
def reestimate_batch_norm(model: nn.Module, batches) -> None:
    """Replace every batch norm's running statistics by their average over ``batches`` (normalised
    images, forward passes in train mode, no parameter changes); leaves the model in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    try:
        for batch in batches:
            model(batch)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()


def train_cnn(model: nn.Module, data: ImageData, config: CNNTrainConfig, masks: WeightMasks | None = None,
              progress: bool = True, description: str = "train", checkpoint_dir: str | Path | None = None,
              resume: bool = False, on_epoch: Callable[[dict], None] | None = None,
              after_step: Callable[[int], None] | None = None,
              stop_after: Callable[[nn.Module, int], bool] | None = None) -> dict:
    """Train ``model`` in place; masked weights are zero from the start and stay zero.

    Args:
        checkpoint_dir: write ``checkpoint_dir/checkpoint.pt`` after every epoch (atomically).
        resume: continue from ``checkpoint_dir/checkpoint.pt`` (same ``config``): weights, optimizer,
            generator and step are restored, so the run continues exactly as if never stopped.
        on_epoch: called with each epoch's history entry
            ``{"epoch", "step", "train_loss", "train_accuracy", "lr", "epoch_time_s", "test_accuracy"?}``.
        after_step: called after each optimizer step with the number of steps done.
        stop_after: asked after every epoch ``e`` (0-based) with the model; training ends when it
            answers true (an early-bird monitor, :mod:`cnn_bridge.pretrain_early_bird`). The
            learning-rate schedule stays the one of ``config.epochs``.

    Returns:
        ``{"test_accuracy", "final_loss", "train_time_s", "eval_time_s", "steps", "epochs_run", "history"}``.
    """
    generator = torch.Generator().manual_seed(config.seed)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=config.momentum > 0)
    checkpoint = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_FILE
    first_epoch, step, history = 0, 0, []
    if resume:
        if checkpoint is None or not checkpoint.exists():
            raise ValueError(f"nothing to resume: {checkpoint} does not exist")
        saved = safe_torch_load(checkpoint)
        _check_resumable(saved, config, checkpoint)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        first_epoch, step, history = saved["epoch"], saved["step"], list(saved["history"])
    if masks is not None:
        masks.apply()
    total = config.total_steps(len(data.train_y))
    evaluate = lambda: evaluate_cnn(model, data.test_x, data.test_y, data.mean, data.std,  # noqa: E731
                                    config.eval_batch_size)
    bar = tqdm(total=total, initial=step, desc=description, disable=not progress, leave=False)
    start, loss_sum, seen, eval_time = time.perf_counter(), 0.0, 0, 0.0
    for epoch in range(first_epoch, config.epochs):
        if step >= total:
            break
        model.train()
        epoch_start = time.perf_counter()
        order = torch.randperm(len(data.train_y), generator=generator)
        loss_sum, seen, correct = 0.0, 0, 0
        for begin in range(0, len(order), config.batch_size):
            if step >= total:
                break
            index = order[begin:begin + config.batch_size]
            images = data.train_x[index]
            if config.augment:
                images = augment(images, generator)
            inputs = normalise(images, data.mean, data.std)
            if config.cutout:
                inputs = cutout(inputs, generator, config.cutout)
            if config.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            lr = learning_rate(step, total, config.lr, config.warmup_steps, config.schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            targets = data.train_y[index]
            with _autocast(config.precision):
                logits = model(inputs)
            loss = F.cross_entropy(logits.float(), targets, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if masks is not None:
                masks.mask_gradients()
            optimizer.step()
            if masks is not None:
                masks.apply()
            loss_sum += loss.item() * len(index)
            correct += int((logits.argmax(1) == targets).sum())
            seen += len(index)
            step += 1
            if after_step is not None:
                after_step(step)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
        entry = {"epoch": epoch + 1, "step": step, "train_loss": loss_sum / max(seen, 1),
                 "train_accuracy": correct / max(seen, 1), "lr": lr,
                 "epoch_time_s": time.perf_counter() - epoch_start}
        if config.eval_every_epoch:
            clock = time.perf_counter()
            entry["test_accuracy"] = evaluate()
            entry["eval_time_s"] = time.perf_counter() - clock
            eval_time += entry["eval_time_s"]
        history.append(entry)
        if checkpoint is not None:
            save_training_state(checkpoint, model, optimizer, generator, epoch + 1, step, history, config)
        if on_epoch is not None:
            on_epoch(entry)
        if stop_after is not None and stop_after(model, epoch):
            break
    bar.close()
    train_time = time.perf_counter() - start - eval_time
    clock = time.perf_counter()
    if len(history) > first_epoch and "test_accuracy" in history[-1]:
        test_accuracy = history[-1]["test_accuracy"]
    else:
        test_accuracy = evaluate()
    eval_time += time.perf_counter() - clock
    if config.channels_last:
        model.to(memory_format=torch.contiguous_format)
    return {"test_accuracy": test_accuracy, "final_loss": history[-1]["train_loss"] if history else loss_sum,
            "train_time_s": train_time, "eval_time_s": eval_time, "steps": step, "epochs_run": len(history),
            "history": history}
