r"""Structured filter pruning on the shared mask engine: score -> choose channels -> mask ->
fine-tune -> compact, in one run (:func:`run_prune`).

Each prunable convolution (:func:`cnn_bridge.compact.prunable_layers`) is a ``channel`` site of a
:class:`~gnnprune.masks.MaskEngine` (:mod:`cnn_bridge.channel_masks`); channels are scored by a
criterion (:mod:`cnn_bridge.channel_scores`), kept to a budget (:mod:`cnn_bridge.allocation`, or
:mod:`cnn_bridge.sensitivity` for per-layer fractions from measured accuracy drops), fine-tuned
under the masks, removed physically (:func:`cnn_bridge.compact.compact`) and timed
(:mod:`cnn_bridge.latency`).

Two flows (:class:`PruneFlow`): ``score`` masks the chosen channels and then fine-tunes; ``asc``
(:mod:`cnn_bridge.ascp`) fine-tunes all channels while clustering and reconstructing filters,
then merges each cluster into one channel. Two allocations (:class:`Allocation`) decide how many
channels each layer keeps: ``uniform`` (one fraction for all layers) and ``snf``
(:mod:`cnn_bridge.snf`, searched on held-out training images); ``sensitivity`` brings its own.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path

import torch
from torch import Tensor

from gnnprune.io import atomic_torch_save, atomic_write_json
from gnnprune.masks import EarlyBirdConfig

from .allocation import MacModel, keep_for_fractions, uniform_fraction_for
from .ascp import ASCPConfig, SoftClusterPruning
from .cap import CAPConfig, ChannelGates, cap_scores, train_gates
from .channel_masks import ChannelMasks, channel_engine
from .compact import architecture, prunable_layers, remove_channels, save_compact
from .counting import count_model
from .data import ImageData, normalise
from .latency import paired_latency
from .pretrain_early_bird import PretrainMonitor, WatchedMask
from .channel_scores import apply_central_compensation, collect_features, score_layers
from .sensitivity import sensitivity_drops, sensitivity_fractions
from .snf import SNFConfig, adaptive_bn_loss, snf_allocate
from .train import CNNTrainConfig, evaluate_cnn, reestimate_batch_norm, train_cnn


class PruneFlow(str, Enum):
    """How the chosen channels are removed: ``score`` masks them, then fine-tunes; ``asc`` (ASCP)
    fine-tunes while clustering and reconstructing filters, then merges the clusters."""

    SCORE = "score"
    ASC = "asc"


class Allocation(str, Enum):
    """How many channels each layer keeps: one fraction for all (``uniform``) or searched (``snf``)."""

    UNIFORM = "uniform"
    SNF = "snf"


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
        flow: :class:`PruneFlow`; ``asc`` ignores the criterion except as ``snf``'s channel ranking.
        allocation: :class:`Allocation` (``snf`` needs a MAC reduction and a train subset, whose
            held-out training images are its validation split).
        ascp, cap, snf: settings of the ``asc`` flow, the ``cap`` criterion and the ``snf`` allocation.
        early_bird: end pre-training once the masks of ``early_bird_watch`` have settled
            (:mod:`cnn_bridge.pretrain_early_bird`, at the run's per-layer fraction; region codes
            on the first ``feature_images`` training images); ``None``: pre-train every epoch.
        early_bird_watch: the parts the monitor watches.
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
    flow: PruneFlow = PruneFlow.SCORE
    allocation: Allocation = Allocation.UNIFORM
    ascp: ASCPConfig = field(default_factory=ASCPConfig)
    cap: CAPConfig = field(default_factory=CAPConfig)
    snf: SNFConfig = field(default_factory=SNFConfig)
    early_bird: EarlyBirdConfig | None = None
    early_bird_watch: tuple[WatchedMask, ...] = (WatchedMask.CHANNELS, WatchedMask.ELEMENTS)

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
        object.__setattr__(self, "flow", PruneFlow(self.flow))
        object.__setattr__(self, "allocation", Allocation(self.allocation))
        if self.allocation is Allocation.SNF:
            if self.criterion == "sensitivity":
                raise ValueError("the sensitivity criterion chooses per-layer fractions itself; it cannot use snf")
            if self.mac_reduction is None or self.train_subset is None:
                raise ValueError("the snf allocation needs a MAC reduction and a train subset (its held-out images "
                                 "are the validation split)")
        object.__setattr__(self, "early_bird_watch", tuple(WatchedMask(part) for part in self.early_bird_watch))
        if self.early_bird is not None and self.checkpoint is not None:
            raise ValueError("the early-bird monitor watches pre-training: it does not apply with a checkpoint")
        if self.early_bird is not None and not self.early_bird_watch:
            raise ValueError("the early-bird monitor needs at least one part to watch")


def _pretrain_monitor(config: PruneRunConfig, model, data: ImageData, input_shape) -> PretrainMonitor:
    """The early-bird monitor of pre-training, at the fraction the run will prune each layer by
    (a MAC reduction's uniform fraction: the criterion's allocation is not known yet)."""
    layers = prunable_layers(model, input_shape)
    fraction = config.fraction
    if fraction is None:
        fraction = uniform_fraction_for(MacModel.of(model, layers, input_shape), config.mac_reduction)
    probe = normalise(data.train_x[:config.feature_images], data.mean, data.std)
    return PretrainMonitor(config.early_bird, config.early_bird_watch, layers, fraction, probe)


def _batches(images: Tensor, data: ImageData, batch_size: int = 64) -> list[Tensor]:
    return [normalise(images[i:i + batch_size], data.mean, data.std) for i in range(0, len(images), batch_size)]


def run_prune(config: PruneRunConfig, data: ImageData, out: str | os.PathLike | None = None,
              progress: bool = True, dense_accuracy: float | None = None) -> dict:
    """Load or train, score, mask, fine-tune, compact, count and time; write ``out/`` files.

    ``dense_accuracy``: the checkpoint's test accuracy when already measured (not evaluated again).

    Writes ``metrics.json``, ``masks.pt`` (the engine's state), ``compact.pt`` and
    ``architecture.json`` (see :func:`cnn_bridge.compact.load_compact`).
    """
    from .criteria import DATA_DRIVEN, TRAINED, get_criterion
    from .models import build_cnn_model, load_weights

    seed = config.finetune.seed
    torch.manual_seed(seed)
    full_data = data
    data = data.subset(config.train_subset, config.test_subset, seed=seed)
    input_shape = tuple(data.train_x.shape[1:])
    build = {"num_classes": data.num_classes, "in_channels": input_shape[0]}
    model = build_cnn_model(config.model, **build)
    record: dict = {"status": "running", "config": asdict(config), "data": data.name, "seed": seed, "times_s": {}}
    clock = time.perf_counter()
    if config.checkpoint is not None:
        load_weights(model, config.checkpoint, config.model)
        record["pretrain"] = {"checkpoint": str(config.checkpoint)}
    else:
        monitor = None if config.early_bird is None else _pretrain_monitor(config, model, data, input_shape)
        record["pretrain"] = train_cnn(model, data, config.pretrain, progress=progress, description="pretrain",
                                       stop_after=monitor)
        if monitor is not None:
            record["pretrain"]["early_bird"] = monitor.record(config.pretrain.epochs)
    record["times_s"]["pretrain"] = time.perf_counter() - clock
    evaluate_test = lambda m: evaluate_cnn(m, data.test_x, data.test_y, data.mean, data.std)  # noqa: E731
    record["accuracy"] = {"dense": evaluate_test(model) if dense_accuracy is None else dense_accuracy}

    clock = time.perf_counter()
    layers = prunable_layers(model, input_shape)
    macs = MacModel.of(model, layers, input_shape)
    criterion = get_criterion(config.criterion)
    features = learned = None
    if config.criterion in DATA_DRIVEN:
        features = collect_features(model, layers, _batches(data.train_x[:config.feature_images], data))
    if config.criterion in TRAINED:
        cap = replace(config.cap, seed=seed, augment=config.finetune.augment)
        learned, record["cap"] = _cap_phase(model, layers, data, cap, progress)
    scores = score_layers(model, layers, criterion, features, learned)
    record["times_s"]["score"] = time.perf_counter() - clock
    clock = time.perf_counter()
    if config.allocation is Allocation.SNF:
        keep, record["snf"] = _snf_phase(model, layers, macs, scores, full_data, config, progress)
    elif config.criterion == "sensitivity":
        probe_x, probe_y = data.train_x[:config.sensitivity_images], data.train_y[:config.sensitivity_images]
        probe = lambda m: evaluate_cnn(m, probe_x, probe_y, data.mean, data.std)  # noqa: E731
        base, drops = sensitivity_drops(model, layers, scores, probe, config.sensitivity_fractions, progress)
        fractions, tolerance = sensitivity_fractions(macs, drops, config.sensitivity_fractions, config.mac_reduction)
        record["sensitivity"] = {"probe_accuracy": base, "fractions_tried": list(config.sensitivity_fractions),
                                 "drops": drops, "tolerance": tolerance}
        keep = keep_for_fractions(scores, fractions)
    else:
        fraction = config.fraction if config.fraction is not None else uniform_fraction_for(macs, config.mac_reduction)
        keep = keep_for_fractions(scores, {layer.conv: fraction for layer in layers})
    record["times_s"]["allocate"] = time.perf_counter() - clock
    if config.flow is PruneFlow.ASC:
        engine, masks, keep = _asc_phase(model, layers, keep, data, config, record, evaluate_test, progress)
    else:
        if config.criterion == "central":
            apply_central_compensation(model, layers, keep, features)
        engine = channel_engine(model, layers, keep)
        masks = ChannelMasks(engine, model, layers)
        masks.apply()
        record["accuracy"]["masked_before_finetune"] = evaluate_test(model)
    record["layers"] = [{"conv": layer.conv, "channels": int(keep[layer.conv].numel()),
                         "kept": int(keep[layer.conv].sum())} for layer in layers]
    record["counts"] = masks.count(input_shape)
    if out is not None:
        out = Path(out)
        atomic_write_json(out / "metrics.json", record)
        atomic_torch_save(engine.state_dict(), out / "masks.pt")

    if config.flow is PruneFlow.SCORE:
        finetune = train_cnn(model, data, config.finetune, masks, progress=progress,
                             description=f"finetune {config.criterion}")
        record["finetune"] = finetune
        record["accuracy"]["masked_after_finetune"] = finetune["test_accuracy"]

    clock = time.perf_counter()
    model.eval()
    small = remove_channels(copy.deepcopy(model), keep, input_shape).eval()
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


def _cap_phase(model, layers, data: ImageData, config: CAPConfig, progress: bool) -> tuple[dict[str, Tensor], dict]:
    """Train CAP's gates with the model frozen, then sum the hardness-weighted masks into importance."""
    gates = ChannelGates(model, layers, config.init_mask)
    clock = time.perf_counter()
    losses = train_gates(model, gates, data, config, progress)
    images = normalise(data.train_x[:config.score_images], data.mean, data.std)
    learned = cap_scores(model, gates, images, data.train_y[:config.score_images])
    return learned, {**losses, "train_time_s": time.perf_counter() - clock}


def _snf_phase(model, layers, macs: MacModel, scores: dict[str, Tensor], full_data: ImageData,
               config: PruneRunConfig, progress: bool) -> tuple[dict[str, Tensor], dict]:
    """SNF's search, validated on training images held out of the run's training subset."""
    seed = config.finetune.seed
    snf = replace(config.snf, seed=seed)
    val_x, val_y = full_data.held_out(config.train_subset, snf.validation_images, seed=seed)
    subset = full_data.subset(config.train_subset, None, seed=seed)
    validation = [(b, val_y[i:i + 128]) for i, b in zip(range(0, len(val_y), 128), _batches(val_x, subset, 128))]
    calibration = _batches(subset.train_x[:snf.calibration_images], subset)
    loss = lambda keep: adaptive_bn_loss(model, layers, keep, calibration, validation)  # noqa: E731
    keep, trace = snf_allocate(macs, scores, config.mac_reduction, loss, snf, progress)
    return keep, trace


def _asc_phase(model, layers, keep: dict[str, Tensor], data: ImageData, config: PruneRunConfig, record: dict,
               evaluate_test, progress: bool):
    """ASCP: fine-tune with cluster-and-reconstruct events, merge, mask the merged-away channels."""
    pruned = {name: int((~k).sum()) for name, k in keep.items()}
    steps = config.finetune.epochs * math.ceil(len(data.train_y) / config.finetune.batch_size)
    soft = SoftClusterPruning(model, layers, pruned, steps, config.ascp)
    finetune = train_cnn(model, data, config.finetune, None, progress=progress, description="finetune asc",
                         after_step=soft)
    record["asc"] = {"accuracy_before_calibration": finetune["test_accuracy"]}
    if config.ascp.calibration_images:
        reestimate_batch_norm(model, _batches(data.train_x[:config.ascp.calibration_images], data))
    model.eval()
    probe = normalise(data.test_x[:64], data.mean, data.std)
    with torch.no_grad():
        reconstructed = model(probe)
    keep = soft.finish()
    engine = channel_engine(model, layers, keep)
    masks = ChannelMasks(engine, model, layers)
    masks.apply()
    with torch.no_grad():
        merge_diff = float((model(probe) - reconstructed).abs().max())
    record["finetune"] = finetune
    record["asc"]["merge_max_abs_diff"] = merge_diff
    record["accuracy"]["masked_before_finetune"] = None
    record["accuracy"]["masked_after_finetune"] = evaluate_test(model)
    return engine, masks, keep

