"""The one full-batch training loop; pruning methods plug in through hooks."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .copruning import CoPruner
from .data import GraphData
from .metrics import get_evaluator
from .nn import GraphModel


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Attributes:
        epochs: full-batch training epochs (>= 1).
        lr: Adam learning rate (model and gates).
        weight_decay: L2 penalty on model parameters (not on gates).
        seed: seeds parameter init, dropout and every random choice of the run.
        pseudo_label_weight: weight of the self-training term on unlabelled nodes (see
            :meth:`TrainingRun.train_loss`); 0 is plain supervised training.
        pseudo_label_threshold: only unlabelled nodes predicted with at least this confidence
            get a pseudo-label.
        pseudo_label_warmup: epochs over which the pseudo-label weight ramps up linearly from 0.
        gate_lr: learning rate of edge logits and feature gates (default: ``lr``).
    """

    epochs: int = 200
    lr: float = 0.01
    weight_decay: float = 5e-4
    seed: int = 0
    pseudo_label_weight: float = 0.0
    pseudo_label_threshold: float = 0.0
    pseudo_label_warmup: int = 0
    gate_lr: float | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.pseudo_label_weight < 0:
            raise ValueError(f"pseudo_label_weight must be >= 0, got {self.pseudo_label_weight}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")


class Method(Protocol):
    """A pruning method: hooks the training loop calls. Methods are not loops."""

    name: str

    def on_start(self, run: "TrainingRun") -> None: ...

    def on_epoch_start(self, run: "TrainingRun", epoch: int) -> None: ...

    def selectable(self, epoch: int) -> bool:
        """May the model of this epoch be selected (e.g. only once masks are final)?"""
        ...

    def on_finish(self, run: "TrainingRun") -> None: ...


@dataclass
class TrainingRun:
    """The state a method's hooks see and change."""

    model: GraphModel
    data: GraphData
    pruner: CoPruner
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    log: list[dict] = field(default_factory=list)

    pseudo_labels: Tensor | None = None
    pseudo_mask: Tensor | None = None
    epoch: int = 0

    def train_loss(self, logits: Tensor) -> Tensor:
        """Cross-entropy on labelled nodes, plus the weighted pseudo-label term on the others.

        .. math::
            L = \\mathrm{CE}(z_{train}, y_{train})
              + \\lambda\\,\\mathrm{CE}(z_{rest}, \\hat{y}_{rest})

        with :math:`\\hat{y}` the arg-max predictions of the previous epoch's evaluation
        (no dropout). Without it, the few labelled nodes give no gradient to most edges and
        feature gates (those more than ``num_layers`` hops from any labelled node).
        """
        labelled = self.data.train_mask
        loss = F.cross_entropy(logits[labelled], self.data.y[labelled])
        weight = self.config.pseudo_label_weight
        if self.config.pseudo_label_warmup > 0:
            weight *= min(1.0, self.epoch / self.config.pseudo_label_warmup)
        if weight > 0 and self.pseudo_mask is not None and bool(self.pseudo_mask.any()):
            loss = loss + weight * F.cross_entropy(logits[self.pseudo_mask], self.pseudo_labels[self.pseudo_mask])
        return loss

    def set_pseudo_labels(self, logits: Tensor) -> None:
        confidence, self.pseudo_labels = torch.softmax(logits, -1).max(-1)
        self.pseudo_mask = ~self.data.train_mask & (confidence >= self.config.pseudo_label_threshold)


@dataclass
class TrainResult:
    """Outcome of :func:`train`: the selected epoch and its state."""

    best_epoch: int
    val: float
    test: float
    train: float
    train_time_s: float
    epochs_run: int
    history: list[dict]
    updates: list[dict]
    model_state: dict
    pruner_state: dict


def make_optimizer(model: GraphModel, pruner: CoPruner, config: TrainConfig) -> torch.optim.Adam:
    """Adam over the model (its own parameter groups if it defines them) and the gates (no decay)."""
    groups = model.param_groups(config.weight_decay)
    gates = pruner.gate_parameters()
    if gates:
        groups.append({"params": gates, "weight_decay": 0.0, "lr": config.gate_lr or config.lr})
    return torch.optim.Adam(groups, lr=config.lr)


@torch.no_grad()
def evaluate(model: GraphModel, pruner: CoPruner, data: GraphData) -> tuple[Tensor, dict[str, float]]:
    model.eval()
    logits = model(pruner.inputs(), pruner.graph())
    score = get_evaluator(data.metric)
    return logits, {split: score(logits, data.y, getattr(data, f"{split}_mask")) for split in ("train", "val", "test")}


def train(model: GraphModel, data: GraphData, pruner: CoPruner, method: Method, config: TrainConfig,
          progress: bool = True) -> TrainResult:
    """Train ``model`` on ``data`` for ``config.epochs`` epochs under ``method``.

    Each epoch: the method's ``on_epoch_start`` (mask updates), one forward/backward over the
    kept graph, dead-weight gradients masked, an Adam step, dead weights re-zeroed, then
    evaluation. The selected model is the one with the best validation score among the
    epochs the method marks selectable; its test score is reported.
    """
    optimizer = make_optimizer(model, pruner, config)
    run = TrainingRun(model, data, pruner, optimizer, config)
    method.on_start(run)
    best: dict | None = None
    history: list[dict] = []
    start = time.perf_counter()
    bar = tqdm(range(config.epochs), desc=f"{method.name} {data.name}", disable=not progress, leave=False)
    for epoch in bar:
        run.epoch = epoch
        method.on_epoch_start(run, epoch)
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = run.train_loss(model(pruner.inputs(), pruner.graph()))
        penalty = getattr(method, "penalty", None)  # optional hook: a regulariser (e.g. UGS's L1)
        if penalty is not None:
            loss = loss + penalty(run)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {float(loss)} at epoch {epoch}")
        loss.backward()
        pruner.mask_gradients()
        optimizer.step()
        pruner.apply_weight_masks()
        logits, scores = evaluate(model, pruner, data)
        run.set_pseudo_labels(logits)
        history.append({"epoch": epoch, "loss": float(loss.detach()), **scores})
        if method.selectable(epoch) and (best is None or scores["val"] > best["val"]):
            best = {"epoch": epoch, **scores, "model": copy.deepcopy(model.state_dict()),
                    "pruner": copy.deepcopy(pruner.state_dict())}
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}", val=f"{scores['val']:.3f}", refresh=False)
    method.on_finish(run)
    elapsed = time.perf_counter() - start
    if best is None:
        raise RuntimeError(f"no epoch was selectable in {config.epochs} epochs (the pruning schedule ends later)")
    return TrainResult(best["epoch"], best["val"], best["test"], best["train"], elapsed, config.epochs,
                       history, run.log, best["model"], best["pruner"])
