"""The library in two calls: :func:`prune` runs a whole pruning run; :func:`attach` gives the
hooks for a training loop of your own. Both take this package's models (by name or built)
and models of your own written with ``torch_geometric`` layers, on a
:class:`~gnnprune.data.GraphData` or a ``torch_geometric.data.Data``, with the defaults of
:meth:`ExperimentConfig.for_model` (those of the ``gnnprune`` command).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .checkpoint import seed_everything
from .config import ExperimentConfig
from .copruning import CoPruner, PruneTargets
from .data import GraphData
from .experiment import build_seed_model, fit_method
from .measure import measure_fitted
from .methods import CGP, Dense, OneShot, PruneMethod, RandomMasks
from .nn import GraphModel
from .training import Method, TrainingRun

Targets = PruneTargets | Sequence[float] | dict


@dataclass
class PruneResult:
    """What :func:`prune` returns: the pruned model and everything measured.

    Attributes:
        model: the trained model with the selected epoch's weights (dead ones exactly zero):
            the module you passed, trained in place, or the one built from a name.
        masks: masks and learned gates (``CoPruner.state_dict()``, as ``masks.pt`` of a run).
        pruned_graph: kept undirected edges, ``edge_index`` (both directions) and learned
            ``edge_weight`` of the kept edges, kept feature indices and their gates.
        metrics: as a run folder's ``seed-K/metrics.json``: ``test``, ``val``, ``best_epoch``,
            ``sparsity`` (achieved, exact kept counts per part and per weight), ``macs``, times,
            ``mask_updates``.
        pruner: the :class:`CoPruner` holding the masks (its model is ``model``, wrapped when
            it is a PyG model).
        config: the configuration the run used.
    """

    model: nn.Module
    masks: dict
    pruned_graph: dict
    metrics: dict
    pruner: CoPruner
    config: ExperimentConfig

    @property
    def test(self) -> float:
        return self.metrics["test"]

    @property
    def sparsity(self) -> dict:
        return self.metrics["sparsity"]


def as_graph_data(data) -> GraphData:
    """``data`` as :class:`GraphData`: itself, or converted from a ``torch_geometric.data.Data``."""
    if isinstance(data, GraphData):
        return data
    from .pyg import from_pyg

    return from_pyg(data)


def as_graph_model(model: nn.Module, data: GraphData, targets: PruneTargets = PruneTargets(),
                   input_layer: str | Sequence[str] | None = None) -> GraphModel:
    """``model`` itself if it is a :class:`GraphModel`, else wrapped as a :class:`~gnnprune.pyg.PyGModel`."""
    if isinstance(model, GraphModel):
        if input_layer is not None:
            raise ValueError(f"input_layer is for models of your own; {type(model).__name__} declares its input "
                             "weights (input_weight_names)")
        return model
    from .pyg import PyGModel

    return PyGModel(model, data, targets, input_layer)


def _targets(targets: Targets | None) -> PruneTargets:
    if targets is None:
        return PruneTargets()
    if isinstance(targets, PruneTargets):
        return targets
    if isinstance(targets, dict):
        return PruneTargets(**targets)
    return PruneTargets(*targets)


def _config(model, data: GraphData, targets: Targets | None, method, epochs: int | None,
            config: ExperimentConfig | None) -> ExperimentConfig:
    if config is None:
        return ExperimentConfig.for_model(model if isinstance(model, str) else None, dataset=data.name,
                                          method=method, targets=_targets(targets), epochs=epochs)
    if method is not None or epochs is not None or targets is not None:
        raise ValueError("give targets, method and epochs through config (ExperimentConfig.for_model) or "
                         "as arguments, not both")
    return config


def prune(model: str | nn.Module, data, targets: Targets | None = None,
          method: PruneMethod | str | None = None, *, epochs: int | None = None, seed: int = 0,
          config: ExperimentConfig | None = None, input_layer: str | Sequence[str] | None = None,
          progress: bool = True) -> PruneResult:
    """Train ``model`` on ``data`` while pruning it to ``targets``; one call, one seed.

    Example::

        import gnnprune as gp
        data = gp.load_dataset("cora")
        result = gp.prune(MyGCN(data.num_features, data.num_classes), data, gp.PruneTargets(0.9, 0.5, 0.5))
        result.test, result.sparsity["kept_edges"], result.model

    Args:
        model: a registered model name (``"gcn"``, see :data:`gnnprune.nn.MODELS`; it is built
            after seeding, as by the ``gnnprune`` command), a :class:`GraphModel`, or a module
            of your own called as ``model(x, edge_index, edge_weight)`` (see
            :mod:`gnnprune.pyg`; seed before you build it).
        data: a :class:`GraphData` (:func:`gnnprune.load_dataset`) or a ``torch_geometric`` ``Data``.
        targets: fraction of weights, edges and features removed: a :class:`PruneTargets`,
            ``(weights, edges, features)`` or a dict.
        method: a :class:`PruneMethod` or its name; default: CGP if any target is above 0.
        epochs: training epochs (default: the model's; 200 for a model of your own).
        seed: seeds every generator before the model is built (by name) or trained.
        config: the whole configuration instead of ``targets`` / ``method`` / ``epochs``
            (start from :meth:`ExperimentConfig.for_model`); its ``seeds`` are not used.
        input_layer: for a model of your own, the layer(s) reading ``data.x`` when they cannot
            be told from the data (see :class:`~gnnprune.pyg.PyGModel`).
        progress: a progress bar on stderr.

    Returns:
        the pruned model, masks, pruned graph and metrics, as a run folder holds them; with the
        same settings the metrics equal those of ``gnnprune prune`` (timings aside).

    Raises:
        ValueError: bad settings, or a model / data that cannot be pruned to the targets (one line).
    """
    data = as_graph_data(data)
    config = _config(model, data, targets, method, epochs, config)
    if isinstance(model, str):
        if config.model is None or config.model.name != model:
            raise ValueError(f"config is for model {getattr(config.model, 'name', None)!r}, not {model!r}")
        graph_model = build_seed_model(config, data, seed)
    else:
        graph_model = as_graph_model(model, data, config.targets, input_layer)
        seed_everything(seed)
    fitted = fit_method(config, graph_model, data, dataclasses.replace(config.train, seed=seed), progress)
    metrics, artifacts = measure_fitted(config, data, seed, graph_model, fitted)
    own = graph_model if isinstance(model, (str, GraphModel)) else model
    if config.model is None:
        metrics["model"] = type(own).__name__
    return PruneResult(own, artifacts["masks.pt"], artifacts["pruned_graph.pt"], metrics, fitted.pruner, config)


@dataclass
class _OwnLoop(TrainingRun):
    """A :class:`TrainingRun` whose objective (used by the probe pass) is the caller's loss."""

    loss_fn: Callable[[Tensor], Tensor] | None = None

    def train_loss(self, logits: Tensor) -> Tensor:
        return super().train_loss(logits) if self.loss_fn is None else self.loss_fn(logits)


def _hooks(config: ExperimentConfig) -> Method:
    method, targets = PruneMethod(config.method), config.targets
    if method in (PruneMethod.UGS, PruneMethod.COLT):
        raise ValueError(f"{method.value} trains many rounds with rewinding, not one loop; use gnnprune.prune for it")
    if method is PruneMethod.JACKPOT:
        raise ValueError("jackpot searches masks in a trained model's frozen weights, not in a training loop; "
                         "use gnnprune.prune for it")
    if method is PruneMethod.ONESHOT:
        return OneShot(targets, prune_epoch=config.train.epochs // 2)
    build = {PruneMethod.DENSE: Dense, PruneMethod.RANDOM: lambda: RandomMasks(targets),
             PruneMethod.CGP: lambda: CGP(config.cgp, targets)}
    return build[method]()


def attach(model: nn.Module, data, optimizer: torch.optim.Optimizer, targets: Targets | None = None,
           method: PruneMethod | str | None = None, *,
           loss_fn: Callable[[Tensor], Tensor] | None = None, epochs: int | None = None, seed: int = 0,
           config: ExperimentConfig | None = None, input_layer: str | Sequence[str] | None = None) -> TrainingRun:
    """Prune ``model`` inside a training loop of your own; returns the hooks to call.

    The learned edge weights and feature gates join ``optimizer`` as one more parameter
    group (learning rate ``config.train.gate_lr``, no weight decay), as in
    :func:`~gnnprune.training.make_optimizer`. Then, every epoch::

        run.before_step(epoch)                    # the method's mask updates (probe pass on update epochs)
        model.train()
        optimizer.zero_grad()
        run.step(loss_fn(model(*run.inputs())))   # penalty, backward, masked gradients, step, dead weights zero

    (:meth:`TrainingRun.after_backward` / :meth:`TrainingRun.after_step` instead of ``step`` when you
    call ``backward`` and ``optimizer.step()`` yourself.) ``run.inputs()`` is
    ``(x, edge_index, edge_weight)`` of the kept graph for a PyG model, ``(x, graph)`` for this
    package's models; evaluate with the same inputs in eval mode. ``run.pruner`` holds the masks.

    Args:
        model: a :class:`GraphModel` or a PyG model of your own (see :func:`prune`).
        data: :class:`GraphData` or a PyG ``Data``.
        optimizer: your optimizer over ``model.parameters()``.
        targets, method, epochs, config, input_layer: as for :func:`prune`; ``epochs`` must be the
            length of your loop (the pruning schedule follows it). UGS needs its own rounds (use
            :func:`prune`); one-shot pruning cuts at ``epochs // 2``.
        loss_fn: ``loss_fn(logits) -> loss`` of the whole graph; the probe pass scores dead
            entries by its gradient (default: cross-entropy on ``data.train_mask``).
        seed: the seed random masks are drawn with.
    """
    data = as_graph_data(data)
    config = _config(None, data, targets, method, epochs, config)
    train_config = dataclasses.replace(config.train, seed=seed)
    graph_model = as_graph_model(model, data, config.targets, input_layer)
    method = PruneMethod(config.method)  # gates as in fit_method: CGP learns them when it prunes, one-shot always
    learn = method is PruneMethod.ONESHOT or (method is PruneMethod.CGP and not config.targets.is_dense)
    pruner = CoPruner(graph_model, data, learn_edge_weights=learn, learn_feature_gates=learn,
                      weight_granularity=config.weight_granularity, weight_distribution=config.weight_distribution)
    edge_lr, feature_lr = train_config.gate_lrs()
    gates = [(p, lr) for p, lr in ((pruner.edge_logit, edge_lr), (pruner.feature_gate, feature_lr)) if p is not None]
    if gates and edge_lr == feature_lr:
        optimizer.add_param_group({"params": [p for p, _ in gates], "lr": edge_lr, "weight_decay": 0.0})
    else:
        for param, lr in gates:
            optimizer.add_param_group({"params": [param], "lr": lr, "weight_decay": 0.0})
    hooks = _hooks(dataclasses.replace(config, train=train_config))
    run = _OwnLoop(graph_model, data, pruner, optimizer, train_config, method=hooks, loss_fn=loss_fn)
    hooks.on_start(run)
    return run
