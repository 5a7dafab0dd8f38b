"""CGP: gradual co-pruning of edges, features and weights with informed regrowth, in one run."""
from __future__ import annotations

from dataclasses import dataclass

from ..copruning import EdgeRanking, FeatureScore, PruneTargets
from ..schedules import CosineDecay, CubicSparsity, update_steps
from ..training import Method


@dataclass(frozen=True)
class CGPConfig:
    """When and how much to prune (the targets are given separately).

    The defaults are those of a 200-epoch run; :meth:`for_epochs` scales the schedule to
    another length.

    Attributes:
        prune_start: first update epoch (default ``epochs // 20``).
        prune_end: last update epoch (default ``3 * epochs // 4``); masks are final from here
            on and model selection considers only later epochs.
        update_every: epochs between updates.
        regrow_fraction: initial fraction of live entries swapped at an update (cosine-decayed to 0
            at ``prune_end``).
        edge_ranking: how live edges are compared when pruning (:class:`EdgeRanking`). ``local``
            (default) removes each node's weakest edges; ``global`` the graph's weakest
            (the comparison on Cora and CiteSeer is in ``results/pruning-rules/``).
        feature_score: how live feature columns are scored (:class:`FeatureScore`): by their
            contribution over all nodes (default) or by gate and weight magnitude alone.
        edge_prior: strength :math:`\\lambda` of a pull of every edge logit :math:`l_e` towards its
            initial value :math:`l_0`, added to the training loss as
            :math:`\\tfrac{\\lambda}{2} \\sum_e (l_e - l_0)^2`. Adam moves every logit by about the
            gate learning rate per step however weak its gradient, so without it edges far from
            the labels drift on noise and their learned weights rank them by chance; with it an
            edge moves only as far as its loss gradient outweighs the pull (L2-SP of Li et al.,
            2018, on the edge weights). 0 turns it off.
    """

    prune_start: int = 10
    prune_end: int = 150
    update_every: int = 10
    regrow_fraction: float = 0.3
    edge_ranking: EdgeRanking = EdgeRanking.LOCAL
    feature_score: FeatureScore = FeatureScore.CONTRIBUTION
    edge_prior: float = 0.0

    def __post_init__(self) -> None:
        for attr, kind in (("edge_ranking", EdgeRanking), ("feature_score", FeatureScore)):
            try:
                object.__setattr__(self, attr, kind(getattr(self, attr)))
            except ValueError:
                raise ValueError(f"unknown {attr.replace('_', ' ')} {getattr(self, attr)!r}; choose from "
                                 f"{', '.join(choice.value for choice in kind)}") from None
        if self.prune_start < 0 or self.prune_end < self.prune_start:
            raise ValueError(f"need 0 <= prune_start <= prune_end, got {self.prune_start}, {self.prune_end}")
        if self.update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {self.update_every}")
        if not self.edge_prior >= 0.0:
            raise ValueError(f"edge_prior must be >= 0, got {self.edge_prior}")
        if not 0.0 <= self.regrow_fraction <= 1.0:
            raise ValueError(f"regrow_fraction must be in [0, 1], got {self.regrow_fraction}")

    @classmethod
    def for_epochs(cls, epochs: int, **fields) -> "CGPConfig":
        """The schedule of an ``epochs``-long run: pruning from ``epochs // 20`` to ``3 * epochs // 4``;
        ``fields`` override any attribute."""
        return cls(**{"prune_start": epochs // 20, "prune_end": 3 * epochs // 4, **fields})

    def check_epochs(self, epochs: int) -> None:
        if self.prune_end >= epochs:
            raise ValueError(f"prune_end ({self.prune_end}) must be < epochs ({epochs}) so the final masks get trained")

    def schedules(self, targets: PruneTargets) -> dict[str, CubicSparsity]:
        return {part: CubicSparsity(0.0, getattr(targets, part), self.prune_start, self.prune_end)
                for part in ("weights", "edges", "features")}


class CGP(Method):
    """Hooks of the co-pruning method.

    At every update epoch (``prune_start``, every ``update_every`` epochs, and ``prune_end``):
    one probe pass scores dead entries by their real gradient (skipped at ``prune_end``, where
    the regrowth fraction has decayed to 0), then every part is pruned to its
    cubic-scheduled sparsity (by :attr:`CGPConfig.edge_ranking` and
    :attr:`CGPConfig.feature_score`) and a cosine-decaying fraction of it is swapped for the best dead
    entries. Between updates the masks are fixed and gates train with the model.

    Unless :attr:`TrainConfig.pseudo_label_weight` says otherwise, CGP trains with a
    self-training term of weight 0.3 (:meth:`~gnnprune.training.TrainingRun.train_loss`): it
    gives a gradient to the edges and feature gates far from the few labelled nodes.
    """

    name = "cgp"
    pseudo_label_weight = 0.3

    def __init__(self, config: CGPConfig, targets: PruneTargets) -> None:
        self.config = config
        self.targets = targets
        self.steps = set(update_steps(config.prune_start, config.prune_end, config.update_every))
        self.sparsity = config.schedules(targets)
        self.regrow = CosineDecay(config.regrow_fraction, config.prune_start, config.prune_end)

    def on_start(self, run) -> None:
        self.config.check_epochs(run.config.epochs)

    def on_epoch_start(self, run, epoch: int) -> None:
        if epoch not in self.steps:
            return
        regrow = self.regrow(epoch)
        probe = run.pruner.probe(run.train_loss) if run.pruner.needs_probe(regrow) else None
        targets = PruneTargets(**{part: schedule(epoch) for part, schedule in self.sparsity.items()})
        report = run.pruner.update(targets, regrow, probe, run.optimizer,
                                   edge_ranking=self.config.edge_ranking, feature_score=self.config.feature_score)
        run.log.append({"epoch": epoch, "targets": vars(targets), "regrow_fraction": regrow,
                        "probe_loss": None if probe is None else probe.loss, "sites": report})

    def penalty(self, run):
        """The edge prior (:attr:`CGPConfig.edge_prior`) on the learned edge logits; 0 without them."""
        logit = run.pruner.edge_logit
        if self.config.edge_prior == 0.0 or logit is None:
            return 0.0
        return 0.5 * self.config.edge_prior * (logit - run.pruner.edge_init_logit).square().sum()

    def selectable(self, epoch: int) -> bool:
        return epoch >= self.config.prune_end

    def state_dict(self) -> dict:
        """Stateless: schedules are pure functions of the epoch; masks and gates live in the pruner."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
