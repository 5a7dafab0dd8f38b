r"""Structured filter pruning on the shared mask engine: score -> choose channels -> mask ->
fine-tune -> compact.

Each prunable convolution (:func:`cnn_bridge.compact.prunable_layers`) is a ``channel`` site of a
:class:`~gnnprune.masks.MaskEngine`. A dead channel has its filter, conv bias and batch-norm
:math:`\gamma, \beta` held at exactly zero, so its activation :math:`\mathrm{relu}(0)` is zero
and removing it (:func:`cnn_bridge.compact.compact`) leaves the outputs unchanged.

Budgets: a pruned fraction ``f`` of every prunable layer (``floor(f C)`` channels, at least one
kept), or a MAC reduction ``r``: the fraction shared by all layers is found by bisection so that
the masked MACs are at most ``(1 - r)`` times the dense MACs. The ``sensitivity`` criterion
instead gives each layer its own fraction from measured accuracy drops (the least harmful cuts
first, until the MAC target is met).
"""
from __future__ import annotations

import copy
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnnprune.io import atomic_torch_save, atomic_write_json, safe_torch_load
from gnnprune.masks import MaskEngine, SiteKind, relative_tolerance, tie_order

from .adapters import WeightMasks, register_weight_site
from .compact import PrunableLayer, architecture, compact, prunable_layers, save_compact
from .counting import count_model, output_positions
from .criteria import TIE_RTOL, Criterion, LayerView
from .criteria.central import compensate as central_compensate
from .data import ImageData, normalise
from .train import CNNTrainConfig, evaluate_cnn, train_cnn


class ChannelMasks(WeightMasks):
    """Output-channel masks of prunable convolutions, applied to the conv weight and bias *and*
    the batch norm's affine parameters, so a dead channel's activation is exactly zero.

    Args:
        engine: holds one ``channel`` site per layer (see :func:`channel_engine`).
        layers: the prunable layers the sites belong to.
    """

    def __init__(self, engine: MaskEngine, model: nn.Module, layers: Sequence[PrunableLayer]) -> None:
        self.layers = list(layers)
        super().__init__(engine, model)

    def refresh(self) -> None:
        super().refresh()
        self._bns = [(self.model.get_submodule(layer.bn), self.engine.mask(f"{layer.conv}.weight"))
                     for layer in self.layers if layer.bn is not None]

    @torch.no_grad()
    def apply(self) -> None:
        super().apply()
        for bn, live in self._bns:
            bn.weight.mul_(live)
            bn.bias.mul_(live)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        super().mask_gradients()
        for bn, live in self._bns:
            for p in (bn.weight, bn.bias):
                if p.grad is not None:
                    p.grad.mul_(live)

    def counting_masks(self) -> dict[str, Tensor]:
        """Weight masks for exact counts: dead output rows of each pruned conv and the matching
        input slices of its consumers (a ``Linear`` after a flattened map: all positions of the channel)."""
        masks = dict(self.weight_masks())
        for layer in self.layers:
            live = self.engine.mask(f"{layer.conv}.weight")
            for name in layer.consumers:
                w = self.model.get_submodule(name).weight
                cols = live.view(1, -1, 1).expand(w.shape[0], -1, w[0].numel() // (live.numel()))
                mask = cols.reshape(w.shape)
                masks[name] = masks[name] & mask if name in masks else mask
        return masks


    def dead_extras(self) -> int:
        """Parameters outside conv/linear weights that a dead channel also loses: its conv bias and
        batch-norm :math:`\\gamma, \\beta` (counted so the masked count equals the compact model's)."""
        extra = 0
        for layer in self.layers:
            dead = int((~self.engine.mask(f"{layer.conv}.weight")).sum())
            extra += dead * ((self.model.get_submodule(layer.conv).bias is not None) + 2 * (layer.bn is not None))
        return extra

    def count(self, input_shape: tuple[int, ...]) -> dict:
        """:func:`~cnn_bridge.counting.count_model` with exact structured counts (see :meth:`counting_masks`)."""
        counts = count_model(self.model, input_shape, self.counting_masks())
        params = counts["params"]
        params["pruned"] -= self.dead_extras()
        params["ratio"] = params["pruned"] / params["dense"]
        return counts


def channel_engine(model: nn.Module, layers: Sequence[PrunableLayer], keep: dict[str, Tensor] | None = None) -> MaskEngine:
    """A mask engine with one ``channel`` site per prunable layer (all live unless ``keep`` says)."""
    engine = MaskEngine()
    for layer in layers:
        register_weight_site(engine, model, layer.conv, SiteKind.CHANNEL,
                             mask=None if keep is None else keep[layer.conv].clone())
    return engine


@torch.no_grad()
def collect_features(model: nn.Module, layers: Sequence[PrunableLayer], batches: Iterable[Tensor]) -> dict[str, Tensor]:
    """Activations ``relu(bn(conv(x)))`` of every prunable layer on ``batches`` (eval mode).

    Returns:
        ``{conv name: [N, C, H, W]}``.
    """
    model.eval()
    store: dict[str, list[Tensor]] = {layer.conv: [] for layer in layers}
    handles = []
    for layer in layers:
        module = model.get_submodule(layer.bn or layer.conv)
        hook = lambda m, i, o, name=layer.conv: store[name].append(F.relu(o).detach().clone())  # noqa: E731
        handles.append(module.register_forward_hook(hook))
    try:
        for batch in batches:
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts) for name, parts in store.items()}


def layer_view(model: nn.Module, layer: PrunableLayer, features: dict[str, Tensor] | None = None) -> LayerView:
    return LayerView(layer.conv, model.get_submodule(layer.conv),
                     model.get_submodule(layer.bn) if layer.bn else None,
                     tuple(model.get_submodule(name) for name in layer.consumers),
                     None if features is None else features.get(layer.conv))


def score_layers(model: nn.Module, layers: Sequence[PrunableLayer], criterion: Criterion,
                 features: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """``{conv name: scores [C]}``; low scores are pruned first."""
    return {layer.conv: criterion(layer_view(model, layer, features)) for layer in layers}


def keep_lowest_pruned(scores: Tensor, fraction: float) -> Tensor:
    """Bool ``[C]`` keeping all but the ``floor(fraction C)`` lowest scores (at least one kept).

    Scores within :data:`~cnn_bridge.criteria.TIE_RTOL` times the largest ``|score|`` are tied
    (chained, see :mod:`gnnprune.masks.selection`) and go to the lower index first, so equal
    scores computed along different paths are pruned in the same order on every CPU.
    """
    c = scores.numel()
    n = min(int(math.floor(fraction * c + 1e-9)), c - 1)
    keep = torch.ones(c, dtype=torch.bool)
    values = scores.detach().double()
    order = tie_order(values, relative_tolerance(values, TIE_RTOL))
    keep[order[:n]] = False
    return keep


def keep_for_fractions(scores: dict[str, Tensor], fractions: dict[str, float]) -> dict[str, Tensor]:
    return {name: keep_lowest_pruned(s, fractions[name]) for name, s in scores.items()}


@dataclass(frozen=True)
class MacModel:
    """Exact MACs at batch 1 as a function of the kept channels of the prunable layers.

    A conv/linear layer costs ``(in_kept * out_kept / in * out) * weights * positions``.
    """

    layers: tuple[PrunableLayer, ...]
    weights: dict[str, int]
    positions: dict[str, int]
    out_of: dict[str, str]       # module -> prunable conv whose channels it outputs
    in_of: dict[str, str]        # module -> prunable conv whose channels it consumes
    channels: dict[str, int]

    @classmethod
    def of(cls, model: nn.Module, layers: Sequence[PrunableLayer], input_shape: tuple[int, ...]) -> "MacModel":
        positions = output_positions(model, input_shape)
        weights = {name: model.get_submodule(name).weight.numel() for name in positions}
        return cls(tuple(layers), weights, positions, {layer.conv: layer.conv for layer in layers},
                   {c: layer.conv for layer in layers for c in layer.consumers},
                   {layer.conv: model.get_submodule(layer.conv).out_channels for layer in layers})

    def macs(self, kept: dict[str, int] | None = None) -> int:
        kept = kept or {}
        total = 0
        for name, w in self.weights.items():
            kept_out = kept.get(self.out_of.get(name), None)
            kept_in = kept.get(self.in_of.get(name), None)
            cost = w * self.positions[name]
            if kept_out is not None:
                cost = cost * kept_out // self.channels[self.out_of[name]]
            if kept_in is not None:
                cost = cost * kept_in // self.channels[self.in_of[name]]
            total += cost
        return total

    def kept_at(self, fractions: dict[str, float]) -> dict[str, int]:
        return {name: c - min(int(math.floor(fractions[name] * c + 1e-9)), c - 1) for name, c in self.channels.items()}


def uniform_fraction_for(macs: MacModel, reduction: float, steps: int = 40) -> float:
    """Smallest fraction ``f`` (to bisection precision) with MACs at ``f`` everywhere <= ``(1 - r)`` dense.

    Raises:
        ValueError: if even keeping one channel per layer does not reach the target.
    """
    target = (1.0 - reduction) * macs.macs()
    at = lambda f: macs.macs(macs.kept_at({name: f for name in macs.channels}))  # noqa: E731
    if at(1.0) > target:
        raise ValueError(f"a {reduction:.0%} MAC reduction is out of reach pruning only these layers "
                         f"(at most {1 - at(1.0) / macs.macs():.1%})")
    low, high = 0.0, 1.0
    for _ in range(steps):
        mid = (low + high) / 2
        low, high = (low, mid) if at(mid) <= target else (mid, high)
    return high


def sensitivity_drops(model: nn.Module, layers: Sequence[PrunableLayer], scores: dict[str, Tensor],
                      accuracy: Callable[[nn.Module], float], fractions: Sequence[float],
                      progress: bool = False) -> tuple[float, dict[str, list[float]]]:
    """Accuracy drop from pruning each layer alone at each fraction (masks undone afterwards).

    Returns:
        ``(dense accuracy, {conv name: [drop per fraction]})``.
    """
    from tqdm.auto import tqdm

    base = accuracy(model)
    drops: dict[str, list[float]] = {}
    for layer in tqdm(layers, desc="sensitivity", disable=not progress, leave=False):
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        drops[layer.conv] = []
        for fraction in fractions:
            keep = {layer.conv: keep_lowest_pruned(scores[layer.conv], fraction)}
            ChannelMasks(channel_engine(model, [layer], keep), model, [layer]).apply()
            drops[layer.conv].append(base - accuracy(model))
            model.load_state_dict(saved)
    return base, drops


def sensitivity_fractions(macs: MacModel, drops: dict[str, list[float]], fractions: Sequence[float],
                          reduction: float) -> tuple[dict[str, float], float]:
    """Per-layer fractions for a MAC target: the (layer, fraction) candidates are taken in order of
    increasing accuracy drop (ties: smaller fraction first, then model order), each raising its
    layer's fraction, until the MACs are at most ``(1 - reduction)`` dense. This is the tolerance
    rule of :func:`~cnn_bridge.criteria.sensitivity.fractions_within` at the smallest tolerance that
    meets the target, with ties broken so that equally harmless cuts are spread over layers. Drops
    are compared exactly: each is a difference of accuracies counted on the same images, so equal
    counts give equal floats.

    Returns:
        ``(fractions, tolerance)``, the tolerance being the drop of the last candidate taken.
    """
    target = (1.0 - reduction) * macs.macs()
    order = list(macs.channels)
    candidates = sorted(((d, f, order.index(name), name) for name, layer_drops in drops.items()
                         for f, d in zip(fractions, layer_drops)))
    chosen = {name: 0.0 for name in macs.channels}
    for drop, fraction, _, name in candidates:
        chosen[name] = max(chosen[name], fraction)
        if macs.macs(macs.kept_at(chosen)) <= target:
            return chosen, drop
    raise ValueError(f"sensitivity fractions up to {max(fractions)} cannot reach a {reduction:.0%} MAC reduction")


def apply_central_compensation(model: nn.Module, layers: Sequence[PrunableLayer], keep: dict[str, Tensor],
                               features: dict[str, Tensor]) -> None:
    """Fold removed channels into their most similar kept ones (central filter), before masking."""
    for layer in layers:
        if not keep[layer.conv].all():
            central_compensate(layer_view(model, layer, features), keep[layer.conv])


@torch.no_grad()
def paired_latency(first: nn.Module, second: nn.Module, input_shape: tuple[int, ...], batch: int,
                   repeats: int = 5) -> tuple[float, float]:
    """Median latencies of two models measured alternately (so load changes hit both alike)."""
    first.eval(), second.eval()
    x = torch.randn(batch, *input_shape)
    first(x), second(x)
    a, b = [], []
    for _ in range(repeats):
        for model, times in ((first, a), (second, b)):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


@dataclass(frozen=True)
class PruneRunConfig:
    """One pruning run.

    Attributes:
        model: a name in :data:`cnn_bridge.models.CNN_MODELS`.
        dataset: ``cifar10`` or ``digits``.
        criterion: a name in :data:`cnn_bridge.criteria.CRITERIA`.
        mac_reduction: target fraction of MACs removed (exclusive with ``fraction``).
        fraction: pruned fraction of every prunable layer.
        checkpoint: a dense model's state_dict to start from (else ``pretrain`` trains one).
        pretrain, finetune: training settings (``finetune`` runs under the channel masks).
        feature_images: training images whose activations data-driven criteria see.
        sensitivity_fractions: per-layer pruned fractions tried by ``sensitivity``.
        sensitivity_images: training images its accuracy drops are measured on.
        latency_batches, latency_repeats: CPU latency settings (median of alternated runs).
        train_subset, test_subset: class-stratified subset sizes (``None``: whole split).
    """

    model: str = "resnet56"
    dataset: str = "cifar10"
    criterion: str = "l1"
    mac_reduction: float | None = 0.5
    fraction: float | None = None
    checkpoint: str | None = None
    pretrain: CNNTrainConfig = field(default_factory=CNNTrainConfig)
    finetune: CNNTrainConfig = field(default_factory=lambda: CNNTrainConfig(epochs=2, lr=0.01))
    feature_images: int = 128
    sensitivity_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    sensitivity_images: int = 500
    latency_batches: tuple[int, ...] = (1, 64)
    latency_repeats: int = 5
    train_subset: int | None = None
    test_subset: int | None = None

    def __post_init__(self) -> None:
        from .criteria import get_criterion
        from .experiment import IMAGE_DATASETS, check_choice
        from .models import cnn_model_spec

        cnn_model_spec(self.model)
        check_choice("dataset", self.dataset, IMAGE_DATASETS)
        get_criterion(self.criterion)
        if (self.mac_reduction is None) == (self.fraction is None):
            raise ValueError("give exactly one of a MAC reduction and a per-layer fraction")
        budget = self.mac_reduction if self.mac_reduction is not None else self.fraction
        if not 0.0 < budget < 1.0:
            raise ValueError(f"MAC reduction / fraction must be in (0, 1), got {budget}")
        if self.criterion == "sensitivity" and self.mac_reduction is None:
            raise ValueError("the sensitivity criterion chooses per-layer fractions itself; give a MAC reduction")
        if self.feature_images < 2 or self.sensitivity_images < 1:
            raise ValueError("need feature_images >= 2 and sensitivity_images >= 1")


def _batches(images: Tensor, data: ImageData, batch_size: int = 64) -> list[Tensor]:
    return [normalise(images[i:i + batch_size], data.mean, data.std) for i in range(0, len(images), batch_size)]


def run_prune(config: PruneRunConfig, data: ImageData, out: str | os.PathLike | None = None,
              progress: bool = True) -> dict:
    """Load or train, score, mask, fine-tune, compact, count and time; write ``out/`` files.

    Writes ``metrics.json``, ``masks.pt`` (the engine's state), ``compact.pt`` and
    ``architecture.json`` (see :func:`cnn_bridge.compact.load_compact`).
    """
    from .criteria import DATA_DRIVEN, get_criterion
    from .models import build_cnn_model

    seed = config.finetune.seed
    torch.manual_seed(seed)
    data = data.subset(config.train_subset, config.test_subset, seed=seed)
    input_shape = tuple(data.train_x.shape[1:])
    build = {"num_classes": data.num_classes, "in_channels": input_shape[0]}
    model = build_cnn_model(config.model, **build)
    record: dict = {"status": "running", "config": asdict(config), "data": data.name, "seed": seed, "times_s": {}}
    clock = time.perf_counter()
    if config.checkpoint is not None:
        model.load_state_dict(safe_torch_load(config.checkpoint))
        record["pretrain"] = {"checkpoint": str(config.checkpoint)}
    else:
        record["pretrain"] = train_cnn(model, data, config.pretrain, progress=progress, description="pretrain")
    record["times_s"]["pretrain"] = time.perf_counter() - clock
    evaluate_test = lambda m: evaluate_cnn(m, data.test_x, data.test_y, data.mean, data.std)  # noqa: E731
    record["accuracy"] = {"dense": evaluate_test(model)}

    clock = time.perf_counter()
    layers = prunable_layers(model, input_shape)
    macs = MacModel.of(model, layers, input_shape)
    criterion = get_criterion(config.criterion)
    features = None
    if config.criterion in DATA_DRIVEN:
        features = collect_features(model, layers, _batches(data.train_x[:config.feature_images], data))
    scores = score_layers(model, layers, criterion, features)
    record["times_s"]["score"] = time.perf_counter() - clock
    clock = time.perf_counter()
    if config.criterion == "sensitivity":
        probe_x, probe_y = data.train_x[:config.sensitivity_images], data.train_y[:config.sensitivity_images]
        probe = lambda m: evaluate_cnn(m, probe_x, probe_y, data.mean, data.std)  # noqa: E731
        base, drops = sensitivity_drops(model, layers, scores, probe, config.sensitivity_fractions, progress)
        fractions, tolerance = sensitivity_fractions(macs, drops, config.sensitivity_fractions, config.mac_reduction)
        record["sensitivity"] = {"probe_accuracy": base, "fractions_tried": list(config.sensitivity_fractions),
                                 "drops": drops, "tolerance": tolerance}
    else:
        fraction = config.fraction if config.fraction is not None else uniform_fraction_for(macs, config.mac_reduction)
        fractions = {layer.conv: fraction for layer in layers}
    keep = keep_for_fractions(scores, fractions)
    record["times_s"]["allocate"] = time.perf_counter() - clock
    if config.criterion == "central":
        apply_central_compensation(model, layers, keep, features)
    engine = channel_engine(model, layers, keep)
    masks = ChannelMasks(engine, model, layers)
    masks.apply()
    record["layers"] = [{"conv": layer.conv, "channels": int(keep[layer.conv].numel()),
                         "kept": int(keep[layer.conv].sum())} for layer in layers]
    record["counts"] = masks.count(input_shape)
    record["accuracy"]["masked_before_finetune"] = evaluate_test(model)
    if out is not None:
        out = Path(out)
        atomic_write_json(out / "metrics.json", record)
        atomic_torch_save(engine.state_dict(), out / "masks.pt")

    finetune = train_cnn(model, data, config.finetune, masks, progress=progress, description=f"finetune {config.criterion}")
    record["finetune"] = finetune
    record["accuracy"]["masked_after_finetune"] = finetune["test_accuracy"]

    clock = time.perf_counter()
    model.eval()
    small = compact(copy.deepcopy(model), keep, input_shape).eval()
    record["times_s"]["compact"] = time.perf_counter() - clock
    probe = normalise(data.test_x[:64], data.mean, data.std)
    with torch.no_grad():
        record["compact_max_abs_diff"] = float((small(probe) - model(probe)).abs().max())
    record["accuracy"]["compact"] = evaluate_test(small)
    compact_counts = count_model(small, input_shape)
    record["compact_counts"] = {"params": compact_counts["params"]["dense"], "macs": compact_counts["macs"]["dense"]}
    record["latency_s"] = {}
    for batch in config.latency_batches:
        masked_s, compact_s = paired_latency(model, small, input_shape, batch, config.latency_repeats)
        record["latency_s"][f"batch_{batch}"] = {"masked": masked_s, "compact": compact_s,
                                                 "speedup": masked_s / compact_s}
    record["torch_threads"] = torch.get_num_threads()
    record["status"] = "done"
    if out is not None:
        save_compact(out, small, architecture(config.model, small, layers, **build))
        atomic_write_json(out / "metrics.json", record)
    return record
