r"""ASCP, asymptotic soft cluster pruning (Niu et al., 2022): the filters of each layer are
clustered by similarity and the members of a cluster are *reconstructed* to one filter, so that
redundancy is introduced on purpose; training then continues and updates them freely (a soft
step: a wrongly clustered filter can drift away again). The pruning rate, and with it the number
of filters that share a cluster, rises over the run on a schedule whose increments decay. At the
end the members of each cluster are identical, and they are *merged*: one representative stays,
the consumers' input slices of the others are added to its slice, and the others are removed, so
the network's output does not change (:func:`merge_clusters`).

The paper's code is not public; this is built from its description, with these choices:

- **Events.** ``reconstructions`` cluster-and-reconstruct events are spaced evenly over the first
  ``1 - tied_fraction`` of the fine-tuning steps. During the remaining ``tied_fraction`` the last
  event's clusters are kept: their members are reconstructed again after every step, so the
  network trains as if merged, and the merge after the final step changes nothing.
- **Rate schedule.** At event :math:`k = 1 \ldots K` layer ``l`` with :math:`n_l` channels to remove
  clusters its :math:`C_l` filters into :math:`C_l - n_{l,k}` clusters with
  :math:`n_{l,k} = \lfloor n_l (1 - d^k) / (1 - d^K) \rfloor` (:func:`pruned_schedule`): the rate
  rises by increments that shrink by the factor ``decay`` :math:`d` each event, and reaches
  :math:`n_l` at the last one. :math:`n_l` comes from the allocation (uniform or SNF).
- **Clustering.** Agglomerative, centroid linkage on the flattened conv filters :math:`W_c`
  (Euclidean): the two clusters with the closest centroids are joined until the number of clusters
  is reached; ties go to the lowest index pair, so the result does not depend on rounding order.
- **Reconstruction.** Every member of a cluster is set to the cluster mean of the filter, the
  batch-norm :math:`\gamma, \beta` and the running mean and variance (the conv bias too, if any),
  so members compute identical channels in train and eval mode.
- **Batch-norm statistics.** The mean of the members' running variances is not the variance of
  the averaged filter's output, and the tied phase is short, so after the last step the running
  statistics are re-estimated on ``calibration_images`` training images (identical members get
  identical statistics, so the merge stays exact).
- **Merge.** The lowest index of a cluster is its representative; for a consumer ``W'``,
  :math:`W'_{:, r} \mathrel{+}= \sum_{j \in \mathrm{cluster}, j \ne r} W'_{:, j}`, and the other
  members are masked (their activation is then exactly zero).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gnnprune.masks import tolerant_argmax

from .compact import PrunableLayer
from .criteria import TIE_RTOL


@dataclass(frozen=True)
class ASCPConfig:
    """Soft cluster pruning schedule.

    Attributes:
        reconstructions: cluster-and-reconstruct events over the fine-tuning steps (``K``).
        decay: ``d`` in (0, 1], the factor by which each event's rate increment shrinks (1: linear).
        tied_fraction: final share of the steps trained with the last clusters held identical.
        calibration_images: training images the batch-norm statistics are re-estimated on after
            the last step (0: not re-estimated).
    """

    reconstructions: int = 8
    decay: float = 0.7
    tied_fraction: float = 0.25
    calibration_images: int = 512

    def __post_init__(self) -> None:
        if self.reconstructions < 1 or not 0 < self.decay <= 1 or not 0 <= self.tied_fraction < 1:
            raise ValueError(f"need reconstructions >= 1, decay in (0, 1] and tied_fraction in [0, 1); got {self}")
        if self.calibration_images < 0:
            raise ValueError(f"need calibration_images >= 0; got {self}")


def pruned_schedule(pruned: int, events: int, decay: float) -> list[int]:
    """:math:`n_{l,k}` for ``k = 1..events``; the last is ``pruned``."""
    if decay == 1.0:
        shares = [k / events for k in range(1, events + 1)]
    else:
        shares = [(1 - decay ** k) / (1 - decay ** events) for k in range(1, events + 1)]
    return [pruned if k == events else math.floor(pruned * share + 1e-9) for k, share in enumerate(shares, 1)]


def cluster_filters(vectors: Tensor, clusters: int) -> Tensor:
    """Cluster labels ``[C]`` (each the lowest member index) of ``vectors`` ``[C, D]`` into ``clusters`` groups.

    Centroid linkage: repeatedly join the two clusters whose centroids are closest.
    """
    c = vectors.shape[0]
    if not 1 <= clusters <= c:
        raise ValueError(f"cannot make {clusters} clusters of {c} filters")
    x = vectors.detach().double().reshape(c, -1)
    labels = torch.arange(c)
    centroids = x.clone()
    sizes = torch.ones(c, dtype=torch.float64)
    alive = torch.ones(c, dtype=torch.bool)
    upper = torch.ones(c, c, dtype=torch.bool).triu(1)
    for _ in range(c - clusters):
        distance = torch.cdist(centroids, centroids)
        scale = float(distance[alive][:, alive].max()) if alive.sum() > 1 else 1.0
        pairs = torch.where(upper & alive.unsqueeze(0) & alive.unsqueeze(1), -distance, float("-inf"))
        i, j = divmod(tolerant_argmax(pairs.view(-1), TIE_RTOL * max(scale, 1e-300)), c)
        centroids[i] = (sizes[i] * centroids[i] + sizes[j] * centroids[j]) / (sizes[i] + sizes[j])
        sizes[i] += sizes[j]
        alive[j] = False
        labels[labels == j] = i
    return labels


def _channel_tensors(model: nn.Module, layer: PrunableLayer) -> list[Tensor]:
    conv = model.get_submodule(layer.conv)
    tensors = [conv.weight.data] + ([conv.bias.data] if conv.bias is not None else [])
    if layer.bn is not None:
        bn = model.get_submodule(layer.bn)
        tensors += [bn.weight.data, bn.bias.data, bn.running_mean, bn.running_var]
    return tensors


@torch.no_grad()
def reconstruct(model: nn.Module, layer: PrunableLayer, labels: Tensor) -> None:
    """Set every cluster member's filter, bias and batch-norm parameters and statistics to the cluster mean."""
    for cluster in labels.unique().tolist():
        members = (labels == cluster).nonzero().view(-1)
        if len(members) < 2:
            continue
        for tensor in _channel_tensors(model, layer):
            tensor[members] = tensor[members].mean(0, keepdim=True)


@torch.no_grad()
def cluster_and_reconstruct(model: nn.Module, layer: PrunableLayer, pruned: int) -> Tensor:
    """Cluster the layer's filters into ``C - pruned`` groups and reconstruct them; returns the labels."""
    weight = model.get_submodule(layer.conv).weight
    labels = cluster_filters(weight.reshape(weight.shape[0], -1), weight.shape[0] - pruned)
    reconstruct(model, layer, labels)
    return labels


@torch.no_grad()
def merge_clusters(model: nn.Module, layer: PrunableLayer, labels: Tensor) -> Tensor:
    """Fold each cluster's members into its representative (lowest index), in place.

    Adds the members' input slices of every consumer to the representative's slice; the members
    must compute the representative's channel (e.g. after :func:`reconstruct`) for the output to be
    unchanged once they are masked.

    Returns:
        bool ``[C]``: the representatives (the channels to keep).
    """
    c = labels.numel()
    keep = labels == torch.arange(c)
    for member in (~keep).nonzero().view(-1).tolist():
        representative = int(labels[member])
        for name in layer.consumers:
            w = model.get_submodule(name).weight.data
            w = w.view(w.shape[0], c, -1)
            w[:, representative] += w[:, member]
    return keep


class SoftClusterPruning:
    """Step callback for :func:`cnn_bridge.train.train_cnn` that runs the ASCP events.

    Args:
        model: the network being fine-tuned.
        layers: the prunable layers.
        pruned: ``{conv name: channels to remove at the end}``.
        total_steps: fine-tuning steps.
        config: the schedule.
    """

    def __init__(self, model: nn.Module, layers: Sequence[PrunableLayer], pruned: dict[str, int], total_steps: int,
                 config: ASCPConfig = ASCPConfig()) -> None:
        self.model, self.layers, self.config = model, list(layers), config
        self.schedule = {layer.conv: pruned_schedule(pruned[layer.conv], config.reconstructions, config.decay)
                         for layer in self.layers}
        soft_steps = total_steps * (1 - config.tied_fraction)
        self.event_steps = [max(1, round(k * soft_steps / config.reconstructions))
                            for k in range(1, config.reconstructions + 1)]
        self.events_done = 0
        self.labels: dict[str, Tensor] = {}

    def __call__(self, step: int) -> None:
        if self.events_done == len(self.event_steps):  # tied phase
            for layer in self.layers:
                reconstruct(self.model, layer, self.labels[layer.conv])
            return
        while self.events_done < len(self.event_steps) and step >= self.event_steps[self.events_done]:
            for layer in self.layers:
                self.labels[layer.conv] = cluster_and_reconstruct(
                    self.model, layer, self.schedule[layer.conv][self.events_done])
            self.events_done += 1

    def finish(self) -> dict[str, Tensor]:
        """Run any event not yet run, reconstruct the last clusters once more, then merge every layer's
        clusters; returns the keep masks."""
        while self.events_done < len(self.event_steps):
            self(self.event_steps[self.events_done])
        self(self.event_steps[-1])
        return {layer.conv: merge_clusters(self.model, layer, self.labels[layer.conv]) for layer in self.layers}
