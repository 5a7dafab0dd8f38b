"""Configuration of a pruning run: the model and everything one ``gnnprune prune`` run needs."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .copruning import PruneTargets, WeightGranularity
from .loader import MiniBatchConfig
from .masks import WeightDistribution
from .methods import METHODS, CGPConfig, JackpotConfig, OneShotConfig, PruneMethod, UGSConfig
from .nn import ModelSpec, model_spec
from .training import TrainConfig


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the model to prune."""

    name: str = "gcn"
    hidden_channels: int = 256
    num_layers: int = 2
    dropout: float = 0.5
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.hidden_channels < 1 or self.num_layers < 1:
            raise ValueError("hidden_channels and num_layers must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one ``gnnprune prune`` run needs; recorded verbatim in metrics.json.

    Build one with :meth:`for_model`, which fills in the defaults of the model and the method
    (the ``gnnprune`` command does the same and only overrides what its flags set).

    Attributes:
        dataset: data set name (see :data:`gnnprune.data.DATASETS`).
        model: architecture of a registered model; ``None`` for a model of your own.
        train: optimisation (the seed field is replaced by each of ``seeds``).
        method: a :class:`~gnnprune.methods.PruneMethod` (or its name).
        targets: final sparsity of weights (every layer), edges and features.
        weight_granularity: prune single weights or whole hidden units (not UGS: element only);
            with units, ``targets.weights`` is the fraction of hidden units removed.
        weight_distribution: spread the weight target uniformly, by ERK or by one global ranking
            (units: uniform only).
        cgp, oneshot, ugs, jackpot: settings of those methods (the others have none; colt runs on ``ugs``'s
            rounds).
        seeds: one run per seed.
        minibatch: if set, train on node batches (:mod:`gnnprune.minibatch`); masks stay global.
    """

    dataset: str
    model: ModelConfig | None = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: PruneMethod = PruneMethod.CGP
    targets: PruneTargets = field(default_factory=PruneTargets)
    weight_granularity: WeightGranularity = WeightGranularity.ELEMENT
    weight_distribution: WeightDistribution = WeightDistribution.UNIFORM
    cgp: CGPConfig = field(default_factory=CGPConfig)
    oneshot: OneShotConfig = field(default_factory=OneShotConfig)
    ugs: UGSConfig = field(default_factory=UGSConfig)
    jackpot: JackpotConfig = field(default_factory=JackpotConfig)
    seeds: tuple[int, ...] = (0,)
    minibatch: MiniBatchConfig | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "method", PruneMethod(self.method))
        except ValueError:
            raise ValueError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}") from None
        rounds = self.method in (PruneMethod.UGS, PruneMethod.COLT)  # rewinding rounds on UGS's schedule
        if self.minibatch is not None and rounds:
            raise ValueError(f"{self.method.value} trains full-batch only; drop --batch-size")
        if self.method == "dense" and not self.targets.is_dense:
            raise ValueError("method dense takes no sparsity targets (all must be 0)")
        if self.method == "cgp" and not self.targets.is_dense:
            self.cgp.check_epochs(self.train.epochs)
        if self.method == "jackpot":
            self._check_jackpot()
        if rounds and WeightGranularity(self.weight_granularity) is not WeightGranularity.ELEMENT:
            raise ValueError(f"{self.method.value} prunes single weights only (weight granularity 'element')")
        if (WeightGranularity(self.weight_granularity) is WeightGranularity.UNIT
                and WeightDistribution(self.weight_distribution) is not WeightDistribution.UNIFORM):
            raise ValueError("unit pruning removes the same fraction of every unit group (weight distribution 'uniform')")

    def _check_jackpot(self) -> None:
        if self.minibatch is not None:
            raise ValueError("jackpot searches full-batch only; drop --batch-size")
        if WeightGranularity(self.weight_granularity) is not WeightGranularity.ELEMENT:
            raise ValueError("jackpot searches single weights only (weight granularity 'element')")
        if self.targets.is_dense:
            raise ValueError("method jackpot needs a sparsity target above 0")
        self.jackpot.check_targets(self.targets)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def for_model(cls, model: str | None = "gcn", *, dataset: str = "", method: PruneMethod | str | None = None,
                  targets: PruneTargets = PruneTargets(), epochs: int | None = None, **fields) -> "ExperimentConfig":
        """The library's configuration of a run: the one source of defaults.

        Model-specific values come from the model's :class:`~gnnprune.nn.ModelSpec`
        (architecture, learning rate, weight decay, epochs, weight distribution, CGP's edge
        prior); for a model of your own (``model=None``) they are the :class:`ModelSpec`
        field defaults. Method-specific values come from the method: the self-training weight
        (:attr:`~gnnprune.training.Method.pseudo_label_weight`, 0.3 for CGP, 0 for the
        baselines, which run as published) and the uniform weight distribution of UGS, COLT and
        unit pruning. The pruning schedule follows the epochs (:meth:`CGPConfig.for_epochs`), as
        does the self-training warm-up (``epochs // 4``).

        Args:
            model: a registered model name (:data:`gnnprune.nn.MODELS`) or ``None``.
            dataset: recorded in the run's metrics.
            method: default: CGP if any target is above 0, else dense.
            targets: final sparsity of weights, edges and features.
            epochs: training epochs (default: the model's).
            fields: any other :class:`ExperimentConfig` field (``seeds``, ``minibatch``,
                ``weight_granularity``, ...). Change nested fields with :meth:`overridden`.
        """
        spec = ModelSpec(target="") if model is None else model_spec(model)
        try:
            method = PruneMethod.default_for(targets) if method is None else PruneMethod(method)
        except ValueError:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}") from None
        epochs = spec.epochs if epochs is None else epochs
        defaults = {
            "model": None if model is None else ModelConfig(model, spec.hidden_channels, spec.num_layers, spec.dropout,
                                                            dict(spec.options)),
            "train": TrainConfig(epochs=epochs, lr=spec.lr, weight_decay=spec.weight_decay,
                                 pseudo_label_weight=method.hooks.pseudo_label_weight),
            "weight_distribution": (WeightDistribution.UNIFORM
                                    if method in (PruneMethod.UGS, PruneMethod.COLT)
                                    or fields.get("weight_granularity") is WeightGranularity.UNIT
                                    else spec.weight_distribution),
            "cgp": CGPConfig.for_epochs(epochs, edge_prior=spec.edge_prior),
        }
        return cls(dataset=dataset, method=method, targets=targets, **{**defaults, **fields})

    def overridden(self, **parts) -> "ExperimentConfig":
        """A copy with some fields replaced; ``None`` values keep the current ones.

        ``parts`` maps a field to its new value or, for a nested configuration (``model``,
        ``train``, ``cgp``, ``oneshot``, ``ugs``, ``jackpot``), to a dict of its fields:
        ``config.overridden(train={"lr": 0.05}, cgp={"edge_prior": 1e-4}, seeds=(0, 1))``.
        Set ``epochs`` through :meth:`for_model`: the schedule and warm-up derive from it there.
        """
        changes = {}
        for key, value in parts.items():
            current = getattr(self, key)
            if isinstance(value, dict) and dataclasses.is_dataclass(current):
                given = {name: v for name, v in value.items() if v is not None}
                if given:
                    changes[key] = dataclasses.replace(current, **given)
            elif value is not None:
                changes[key] = value
        return dataclasses.replace(self, **changes)
