r"""Structured filter pruning on the shared mask engine: score -> choose channels -> mask ->
fine-tune -> compact, in one run (:func:`run_prune`).

Each prunable convolution (:func:`cnn_bridge.compact.prunable_layers`) is a ``channel`` site of a
:class:`~gnnprune.masks.MaskEngine` (:mod:`cnn_bridge.channel_masks`); channels are scored by a
criterion (:mod:`cnn_bridge.channel_scores`), kept to a budget (:mod:`cnn_bridge.allocation`, or
:mod:`cnn_bridge.sensitivity` for per-layer fractions from measured accuracy drops), fine-tuned
under the masks, removed physically (:func:`cnn_bridge.compact.compact`) and timed
(:mod:`cnn_bridge.latency`).
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from gnnprune.io import atomic_torch_save, atomic_write_json, safe_torch_load
from gnnprune.masks import EarlyBirdConfig

from .allocation import MacModel, keep_for_fractions, uniform_fraction_for
from .channel_masks import ChannelMasks, channel_engine
from .compact import architecture, prunable_layers, remove_channels, save_compact
from .counting import count_model
from .data import ImageData, normalise
from .latency import paired_latency
from .pretrain_early_bird import PretrainMonitor, WatchedMask
from .channel_scores import apply_central_compensation, collect_features, score_layers
from .sensitivity import sensitivity_drops, sensitivity_fractions
from .train import CNNTrainConfig, evaluate_cnn, train_cnn


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
        monitor = None if config.early_bird is None else _pretrain_monitor(config, model, data, input_shape)
        record["pretrain"] = train_cnn(model, data, config.pretrain, progress=progress, description="pretrain",
                                       stop_after=monitor)
        if monitor is not None:
            record["pretrain"]["early_bird"] = monitor.record(config.pretrain.epochs)
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
