"""The one full-batch training loop; pruning methods plug in through hooks."""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .checkpoint import NonFiniteError, TrainingInterrupted, differing_keys, rng_state, set_rng_state
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
            :meth:`TrainingRun.train_loss`); 0 is plain supervised training. ``None``: the
            method's own (:attr:`Method.pseudo_label_weight`: CGP trains with 0.3, the baselines
            run supervised, as published).
        pseudo_label_threshold: only unlabelled nodes predicted with at least this confidence
            get a pseudo-label.
        pseudo_label_warmup: epochs over which the pseudo-label weight ramps up linearly from 0
            (``None``: ``epochs // 4``).
        gate_lr: learning rate of edge logits and feature gates (``None``: ``lr``; 0 freezes them).
        edge_gate_lr, feature_gate_lr: learning rate of the edge logits / of the feature gates
            alone (default: ``gate_lr``). Freezing the feature gates while the edge weights learn
            takes GCNII on CiteSeer from 3.74 to 0.28 points below dense at 0.8 / 0.3 / 0.3
            (``results/model-zoo/``); on Cora the same model needs them learned.
    """

    epochs: int = 200
    lr: float = 0.01
    weight_decay: float = 5e-4
    seed: int = 0
    pseudo_label_weight: float | None = None
    pseudo_label_threshold: float = 0.0
    pseudo_label_warmup: int | None = None
    gate_lr: float | None = 0.1
    edge_gate_lr: float | None = None
    feature_gate_lr: float | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.pseudo_label_warmup is None:
            object.__setattr__(self, "pseudo_label_warmup", self.epochs // 4)
        if self.pseudo_label_weight is not None and self.pseudo_label_weight < 0:
            raise ValueError(f"pseudo_label_weight must be >= 0, got {self.pseudo_label_weight}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        for name in ("gate_lr", "edge_gate_lr", "feature_gate_lr"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be >= 0 (0 freezes the gates), got {value}")

    def gate_lrs(self) -> tuple[float, float]:
        """``(edge logits, feature gates)`` learning rates after the defaults."""
        shared = self.lr if self.gate_lr is None else self.gate_lr
        pick = lambda value: shared if value is None else value  # noqa: E731
        return pick(self.edge_gate_lr), pick(self.feature_gate_lr)


class Method:
    """A pruning method: hooks the training loop calls, all no-ops here. Methods are not loops.

    The loop (:func:`train`, or one of your own through :class:`TrainingRun`'s
    :meth:`~TrainingRun.before_step` and :meth:`~TrainingRun.step`) calls ``on_start`` once,
    ``on_epoch_start`` before every epoch's step, ``penalty`` when it builds the loss, and
    ``on_finish`` at the end; ``selectable`` says which epochs model selection may pick.

    Attributes:
        name: recorded in checkpoints, shown on the progress bar.
        pseudo_label_weight: the self-training weight the method trains with when
            :attr:`TrainConfig.pseudo_label_weight` is ``None``.
    """

    name = "method"
    pseudo_label_weight = 0.0

    def on_start(self, run: "TrainingRun") -> None:
        pass

    def on_epoch_start(self, run: "TrainingRun", epoch: int) -> None:
        pass

    def penalty(self, run: "TrainingRun") -> Tensor | float | None:
        """A term added to the training loss (UGS's L1, CGP's edge prior); ``None``: none."""
        return None

    def selectable(self, epoch: int) -> bool:
        """May the model of this epoch be selected (e.g. only once masks are final)?"""
        return True

    def finished(self, run: "TrainingRun", epoch: int) -> bool:
        """Does the run end after ``epoch``, before ``config.epochs`` (e.g. an early-bird monitor
        fired)? Asked after the epoch's step; the loop stops after the first epoch answered true."""
        return False

    def on_finish(self, run: "TrainingRun") -> None:
        pass

    def state_dict(self) -> dict:
        """Everything the method changes while it runs (``{}`` if stateless), for checkpoints.

        Tensors and plain containers only (loaded with ``weights_only=True``). On resume
        ``on_start`` runs, then model, masks, optimizer, this state and the global generators
        (torch CPU, ``random``, NumPy) are restored; a method drawing from a generator of its
        own must keep that generator's state here.
        """
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass
class TrainingRun:
    """The state a method's hooks see and change, and the hooks a training loop calls.

    :func:`train` is one loop over these hooks; a loop of your own calls them the same way
    (see :func:`gnnprune.api.attach`)::

        for epoch in range(epochs):
            run.before_step(epoch)              # the method's mask updates (a probe pass on update epochs)
            model.train()
            optimizer.zero_grad()
            run.step(loss_fn(model(*run.inputs())))  # penalty, backward, step, dead weights kept at zero

    ``config.pseudo_label_weight`` ``None`` becomes the method's own here.
    """

    model: GraphModel
    data: GraphData
    pruner: CoPruner
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    log: list[dict] = field(default_factory=list)

    pseudo_labels: Tensor | None = None
    pseudo_mask: Tensor | None = None
    epoch: int = 0
    method: Method = field(default_factory=Method)

    def __post_init__(self) -> None:
        if self.config.pseudo_label_weight is None:
            self.config = dataclasses.replace(self.config, pseudo_label_weight=self.method.pseudo_label_weight)

    # hooks of one optimisation step ---------------------------------------------------------------
    def before_step(self, epoch: int) -> None:
        """Start epoch ``epoch``: the method's mask updates for it (with a probe pass of
        :meth:`train_loss` on update epochs)."""
        self.epoch = epoch
        self.method.on_epoch_start(self, epoch)

    def inputs(self) -> tuple:
        """Arguments of the model's own call on the kept graph (``(x, edge_index, edge_weight)``
        for a PyG model, see :meth:`GraphModel.call_args`)."""
        return self.model.call_args(self.pruner.inputs(), self.pruner.graph())

    def step(self, loss: Tensor) -> float:
        """Finish a step after the forward: add the method's penalty, backward, zero the gradient
        of dead weights, step the optimizer, re-zero dead weights. Returns the loss.

        Raises:
            NonFiniteError: the loss is NaN or infinite (nothing is stepped).
        """
        return optimizer_step(self, with_penalty(self, self.method, loss))

    def after_backward(self) -> None:
        """Zero the gradient of dead weights (for a loop that calls ``backward`` itself)."""
        self.pruner.mask_gradients()

    def after_step(self) -> None:
        """Re-zero dead weights after ``optimizer.step()`` (for a loop that steps itself)."""
        self.pruner.apply_weight_masks()

    # the built-in objective ----------------------------------------------------------------------
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
        loss = self.data.loss(logits[labelled], self.data.y[labelled])
        weight = self.config.pseudo_label_weight
        if self.config.pseudo_label_warmup > 0:
            weight *= min(1.0, self.epoch / self.config.pseudo_label_warmup)
        if weight > 0 and self.pseudo_mask is not None and bool(self.pseudo_mask.any()):
            loss = loss + weight * F.cross_entropy(logits[self.pseudo_mask], self.pseudo_labels[self.pseudo_mask])
        return loss

    def set_pseudo_labels(self, logits: Tensor) -> None:
        if self.data.task != "multiclass":  # arg-max pseudo-labels only exist for one class per node
            return
        confidence, self.pseudo_labels = torch.softmax(logits, -1).max(-1)
        self.pseudo_mask = ~self.data.train_mask & (confidence >= self.config.pseudo_label_threshold)

    def state_dict(self) -> dict:
        """The loop state beyond model, optimizer and pruner: epoch, method log, pseudo-labels."""
        return {"epoch": self.epoch, "log": copy.deepcopy(self.log), "pseudo_labels": self.pseudo_labels,
                "pseudo_mask": self.pseudo_mask}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self.log = copy.deepcopy(state["log"])
        self.pseudo_labels, self.pseudo_mask = state["pseudo_labels"], state["pseudo_mask"]


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
    """Adam over the model (its own parameter groups if it defines them) and the gates (no decay).

    The gates form one group when edge logits and feature gates share a learning rate, else one
    group each.
    """
    groups = model.param_groups(config.weight_decay)
    edge_lr, feature_lr = config.gate_lrs()
    gates = [(p, lr) for p, lr in ((pruner.edge_logit, edge_lr), (pruner.feature_gate, feature_lr)) if p is not None]
    if gates and len({lr for _, lr in gates}) == 1:
        groups.append({"params": [p for p, _ in gates], "weight_decay": 0.0, "lr": gates[0][1]})
    else:
        groups += [{"params": [p], "weight_decay": 0.0, "lr": lr} for p, lr in gates]
    return torch.optim.Adam(groups, lr=config.lr)


@torch.no_grad()
def evaluate(model: GraphModel, pruner: CoPruner, data: GraphData) -> tuple[Tensor, dict[str, float]]:
    model.eval()
    logits = model(pruner.inputs(), pruner.graph())
    score = get_evaluator(data.metric)
    return logits, {split: score(logits, data.y, getattr(data, f"{split}_mask")) for split in ("train", "val", "test")}


def full_batch_step(run: "TrainingRun", method: Method) -> dict:
    """One optimizer step on the whole kept graph; returns what the epoch's history records.

    Forward/backward (plus the method's optional ``penalty(run)`` regulariser), dead-weight
    gradients masked, an Adam step, dead weights re-zeroed.
    """
    model, pruner = run.model, run.pruner
    run.optimizer.zero_grad(set_to_none=True)
    return {"loss": run.step(run.train_loss(model(pruner.inputs(), pruner.graph())))}


def with_penalty(run: "TrainingRun", method: Method, loss: Tensor) -> Tensor:
    """``loss`` plus the method's ``penalty(run)`` hook (UGS's L1, CGP's edge prior), if any."""
    penalty = method.penalty(run)
    return loss if penalty is None else loss + penalty


def optimizer_step(run: "TrainingRun", loss: Tensor) -> float:
    """Guard against a non-finite loss, backward, mask dead-weight gradients, step, re-zero dead weights."""
    if not torch.isfinite(loss):
        raise NonFiniteError(f"training loss became {float(loss.detach())}", run.epoch)
    loss.backward()
    run.after_backward()
    run.optimizer.step()
    run.after_step()
    return float(loss.detach())


def train(model: GraphModel, data: GraphData, pruner: CoPruner, method: Method, config: TrainConfig,
          progress: bool = True, *, checkpoint_every: int = 0, on_checkpoint: Callable[[dict], None] | None = None,
          resume_from: dict | None = None, should_stop: Callable[[], bool] | None = None,
          run_class: type["TrainingRun"] | None = None,
          epoch_step: Callable[["TrainingRun", Method], dict] = full_batch_step) -> TrainResult:
    """Train ``model`` on ``data`` for ``config.epochs`` epochs under ``method``.

    Each epoch: :meth:`TrainingRun.before_step` (the method's mask updates), one forward over
    the kept graph and :meth:`TrainingRun.step` (penalty, backward, dead-weight gradients
    masked, an Adam step, dead weights re-zeroed), then evaluation. The selected model is the
    one with the best validation score among the epochs the method marks selectable; its test
    score is reported, and ``model`` and ``pruner`` are left at its state (weights, masks, gates).

    Args:
        checkpoint_every: hand a checkpoint to ``on_checkpoint`` after every ``checkpoint_every``-th
            epoch (0: only after the last epoch and at a stop request).
        on_checkpoint: receives the state of the run after an epoch (see :func:`training_state`);
            it decides where and how to write it.
        resume_from: such a state: ``model``, ``pruner`` and ``method`` must be built as for the
            original run; the method's ``on_start`` runs, then model, optimizer, masks, gates,
            method, loop state and random generators are restored and training continues after
            the saved epoch. The result equals the uninterrupted run's (bit for bit on CPU).
        should_stop: polled after every epoch; when true, a checkpoint is handed over and
            :class:`~gnnprune.checkpoint.TrainingInterrupted` is raised.
        run_class: the :class:`TrainingRun` type (its ``train_loss``) the epochs use.
        epoch_step: optimises one epoch and returns the history entry's ``loss`` (and any other
            fields): :func:`full_batch_step`, or one step per batch in :mod:`gnnprune.minibatch`.

    Raises:
        NonFiniteError: the loss or a parameter became NaN / inf; that epoch is not checkpointed.
        TrainingInterrupted: ``should_stop`` answered true before the last epoch.
    """
    optimizer = make_optimizer(model, pruner, config)
    run = (run_class or TrainingRun)(model, data, pruner, optimizer, config, method=method)
    config = run.config
    method.on_start(run)
    best: dict | None = None
    history: list[dict] = []
    first, spent = 0, 0.0
    if resume_from is not None:
        best, history, spent = _restore(resume_from, run, method)
        first = resume_from["epoch"] + 1
    start = time.perf_counter()
    bar = tqdm(range(first, config.epochs), initial=first, total=config.epochs, desc=f"{method.name} {data.name}",
               disable=not progress, leave=False)
    for epoch in bar:
        run.before_step(epoch)
        model.train()
        step = epoch_step(run, method)
        _check_finite(model, pruner, epoch)
        logits, scores = evaluate(model, pruner, data)
        run.set_pseudo_labels(logits)
        history.append({"epoch": epoch, **step, **scores})
        if method.selectable(epoch) and (best is None or scores["val"] > best["val"]):
            best = {"epoch": epoch, **scores, "model": copy.deepcopy(model.state_dict()),
                    "tensors": [t.detach().clone() for t in _module_tensors(model)],
                    "pruner": copy.deepcopy(pruner.state_dict())}
        bar.set_postfix(loss=f"{step['loss']:.3f}", val=f"{scores['val']:.3f}", refresh=False)
        last = method.finished(run, epoch) or epoch == config.epochs - 1
        stop = should_stop is not None and should_stop()
        if on_checkpoint is not None and (last or stop or (checkpoint_every and (epoch + 1) % checkpoint_every == 0)):
            on_checkpoint(training_state(run, method, history, best, spent + time.perf_counter() - start))
        if stop and not last:
            raise TrainingInterrupted(epoch)
        if last:
            break
    method.on_finish(run)
    elapsed = spent + time.perf_counter() - start
    if best is None:
        raise RuntimeError(f"no epoch was selectable in {config.epochs} epochs (the pruning schedule ends later)")
    with torch.no_grad():  # leave model and masks at the selected epoch, whose scores are reported
        for tensor, selected in zip(_module_tensors(model), best["tensors"], strict=True):
            tensor.copy_(selected)
    pruner.load_state_dict(best["pruner"])
    return TrainResult(best["epoch"], best["val"], best["test"], best["train"], elapsed, len(history),
                       history, run.log, best["model"], best["pruner"])


def _module_tensors(model: nn.Module) -> list[Tensor]:
    """Every parameter and buffer of ``model``, in registration order.

    The selected epoch is put back through these rather than ``load_state_dict``: a module
    under a torch parametrization (UGS's soft weight masks) whose own ``_save_to_state_dict``
    writes the parametrized value (PyG's ``Linear``) has a state_dict that does not load back.
    """
    return [*model.parameters(), *model.buffers()]


def training_state(run: TrainingRun, method: Method, history: list[dict], best: dict | None,
                   train_time_s: float) -> dict:
    """Everything needed to continue a run after ``run.epoch``, as tensors and plain containers.

    Keys: ``epoch``, ``train_config`` (a plain dict), ``method`` (name and ``state_dict()``, or
    ``None`` for a method without one), ``model``, ``optimizer``, ``pruner`` (masks, gates),
    ``run`` (:meth:`TrainingRun.state_dict`), ``history``, ``best`` (the selected epoch so far,
    with its model and masks), ``train_time_s`` and ``rng`` (torch, ``random``, NumPy).
    """
    method_state = method.state_dict()
    return {
        "epoch": run.epoch,
        "train_config": _plain(dataclasses.asdict(run.config)),
        "method": {"name": method.name, "state": method_state},
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "pruner": run.pruner.state_dict(),
        "run": run.state_dict(),
        "history": copy.deepcopy(history),
        "best": best,
        "train_time_s": train_time_s,
        "rng": rng_state(),
    }


def _restore(state: dict, run: TrainingRun, method: Method) -> tuple[dict | None, list[dict], float]:
    if state["method"]["name"] != method.name:
        raise ValueError(f"checkpoint is of method {state['method']['name']!r}, not {method.name!r}")
    differing = differing_keys(state["train_config"], _plain(dataclasses.asdict(run.config)))
    if differing:
        raise ValueError(f"checkpoint was trained with other settings: {', '.join(differing)}")
    if state["method"]["state"] is None:
        raise ValueError(f"method {method.name!r} keeps no state_dict(); it cannot be resumed exactly")
    run.model.load_state_dict(state["model"])
    run.pruner.load_state_dict(state["pruner"])
    run.optimizer.load_state_dict(state["optimizer"])
    method.load_state_dict(state["method"]["state"])
    run.load_state_dict(state["run"])
    set_rng_state(state["rng"])
    return state["best"], copy.deepcopy(state["history"]), float(state["train_time_s"])


def _check_finite(model: GraphModel, pruner: CoPruner, epoch: int) -> None:
    for name, param in [*model.named_parameters(), *(("gate", g) for g in pruner.gate_parameters())]:
        if not bool(torch.isfinite(param).all()):
            raise NonFiniteError(f"parameter {name} became non-finite", epoch)


def _plain(config: dict) -> dict:
    """JSON-normalised copy (enums -> their values, tuples -> lists), safe for ``weights_only`` loads."""
    return json.loads(json.dumps(config))
