"""Random pruning: masks drawn at random at the targets before training, then fixed."""
from __future__ import annotations

import torch

from ..copruning import EdgeRanking, PruneTargets
from .dense import Dense


class RandomMasks(Dense):
    """Kill a uniformly random set of entries of every site (exact counts) at the start.

    The draw uses its own generator seeded with the run's seed, so it does not shift the
    model's random stream. Weight rows of pruned features are pruned first, as in every
    method, then random weights of the remaining rows.
    """

    name = "random"

    def __init__(self, targets: PruneTargets) -> None:
        self.targets = targets

    def on_start(self, run) -> None:
        generator = torch.Generator().manual_seed(run.config.seed)
        scores = {site.name: torch.rand(site.mask.shape, generator=generator) for site in run.pruner.engine}
        run.pruner.update(self.targets, prune_scores=scores, edge_ranking=EdgeRanking.GLOBAL)
        run.log.append({"epoch": 0, "targets": vars(self.targets), "sites": "random"})
