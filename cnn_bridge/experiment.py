"""One RGP experiment: build a model, fix its masks once, train from scratch, count, record."""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from gnnprune.io import atomic_torch_save, atomic_write_json, safe_torch_load
from gnnprune.masks import MaskEngine

from .adapters import WeightMasks, weight_mask
from .counting import count_model
from .data import ImageData, load_cifar10, load_digits
from .models import build_cnn_model, cnn_model_spec, load_weights
from .rgp import LayerGraph, RGPConfig, random_element_masks, records_as_dicts, rgp_masks
from .train import CHECKPOINT_FILE, CNNTrainConfig, evaluate_cnn, train_cnn

MaskBuilder = Callable[[nn.Module, MaskEngine, RGPConfig], list[LayerGraph]]


def dense_masks(model: nn.Module, engine: MaskEngine, config: RGPConfig) -> list[LayerGraph]:
    """No sites: every weight is kept."""
    return []


def optimised_regular_masks(model: nn.Module, engine: MaskEngine, config: RGPConfig) -> list[LayerGraph]:
    """RGP: random regular graphs rewired for a low ASPL (``config.swaps`` proposals per layer)."""
    return rgp_masks(model, engine, config)


def random_regular_masks(model: nn.Module, engine: MaskEngine, config: RGPConfig) -> list[LayerGraph]:
    """The same random regular graphs, not rewired."""
    return rgp_masks(model, engine, replace(config, swaps=0))


def random_element_masks_like_rgp(model: nn.Module, engine: MaskEngine, config: RGPConfig) -> list[LayerGraph]:
    """Unstructured random masks keeping, per layer, exactly as many weights as the RGP mask.

    Returns no layer records: these masks are not graphs.
    """
    reference = MaskEngine()
    rgp_masks(model, reference, replace(config, swaps=0))
    kept = {site.meta["module"]: int(weight_mask(site).sum()) for site in reference}
    random_element_masks(model, engine, kept, config.seed)
    return []


MASKS: dict[str, MaskBuilder] = {
    "dense": dense_masks,
    "rgp": optimised_regular_masks,
    "random-regular": random_regular_masks,
    "random-element": random_element_masks_like_rgp,
}

IMAGE_DATASETS: dict[str, Callable[[str | os.PathLike | None], ImageData]] = {
    "cifar10": load_cifar10,
    "digits": lambda data_root=None: load_digits(),
}


def check_choice(kind: str, name: str, choices) -> None:
    if name not in choices:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {', '.join(choices)}")


@dataclass(frozen=True)
class RGPRunConfig:
    """Everything one run needs.

    Attributes:
        model: a name in :data:`cnn_bridge.models.CNN_MODELS`.
        mask: a name in :data:`MASKS`.
        dataset: a name in :data:`IMAGE_DATASETS`.
        train_subset, test_subset: class-stratified subset sizes (``None``: whole split).
        checkpoint: a dense state_dict to mask and fine-tune (``train`` is then the fine-tuning);
            ``None`` trains from scratch under the masks.
    """

    model: str = "resnet20"
    mask: str = "rgp"
    dataset: str = "cifar10"
    rgp: RGPConfig = field(default_factory=RGPConfig)
    train: CNNTrainConfig = field(default_factory=CNNTrainConfig)
    train_subset: int | None = None
    test_subset: int | None = None
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        cnn_model_spec(self.model)
        check_choice("mask", self.mask, MASKS)
        check_choice("dataset", self.dataset, IMAGE_DATASETS)


def run_rgp(config: RGPRunConfig, data: ImageData, out: str | os.PathLike | None = None,
            progress: bool = True, dense_accuracy: float | None = None) -> dict:
    """Train ``config.model`` under fixed masks, from scratch or from ``config.checkpoint``; write
    ``out/{metrics.json, masks.pt, model.pt}``.

    Args:
        data: the full data set; the configured subsets are drawn from it (seeded by the run's seed).
        dense_accuracy: the checkpoint's test accuracy when already measured (not evaluated again).
    Returns:
        the metrics record (also in ``metrics.json``).
    """
    seed = config.train.seed
    torch.manual_seed(seed)
    data = data.subset(config.train_subset, config.test_subset, seed=seed)
    spec = cnn_model_spec(config.model)
    model = build_cnn_model(config.model, num_classes=data.num_classes, in_channels=data.train_x.shape[1])
    engine = MaskEngine()
    start = time.perf_counter()
    layers = MASKS[config.mask](model, engine, replace(config.rgp, seed=seed))
    mask_time = time.perf_counter() - start
    masks = WeightMasks(engine, model)
    input_shape = tuple(data.train_x.shape[1:])
    counts = count_model(model, input_shape, masks.weight_masks())
    record = {
        "status": "running",
        "config": _config_dict(config),
        "data": data.name,
        "seed": seed,
        "counts": counts,
        "density": {"pruned_layers": masks.kept() / masks.total() if masks.total() else 1.0,
                    "model_params": counts["params"]["ratio"]},
        "layers": records_as_dicts(layers),
        "mask_time_s": mask_time,
        "model_input": list(spec.input_shape),
    }
    if config.checkpoint is not None:
        load_weights(model, config.checkpoint, f"{config.model} for {config.dataset}")
        evaluate_test = lambda: evaluate_cnn(model, data.test_x, data.test_y, data.mean, data.std,  # noqa: E731
                                             config.train.eval_batch_size)
        record["accuracy"] = {"dense": evaluate_test() if dense_accuracy is None else dense_accuracy}
        masks.apply()
        record["accuracy"]["masked_before_finetune"] = evaluate_test()
    if out is not None:
        out = Path(out)
        atomic_write_json(out / "metrics.json", record)
        atomic_torch_save(engine.state_dict(), out / "masks.pt")
    record.update(train_cnn(model, data, config.train, masks, progress=progress, description=f"{config.mask} s{seed}"))
    record["status"] = "done"
    if out is not None:
        atomic_torch_save(model.state_dict(), out / "model.pt")
        atomic_write_json(out / "metrics.json", record)
    return record


def _config_dict(config: RGPRunConfig) -> dict:
    return {**asdict(config), "train": config.train.record()}


@dataclass(frozen=True)
class TrainRunConfig:
    """A dense training run (``gnnprune cnn train``).

    Attributes:
        model: a name in :data:`cnn_bridge.models.CNN_MODELS`.
        dataset: a name in :data:`IMAGE_DATASETS`.
        train: the training recipe.
        train_subset, test_subset: class-stratified subset sizes (``None``: whole split).
        init_from: a state_dict of the same model to start from instead of a random initialisation
            (a further learning-rate cycle on a trained model: a warm restart).
    """

    model: str = "resnet20"
    dataset: str = "cifar10"
    train: CNNTrainConfig = field(default_factory=CNNTrainConfig)
    train_subset: int | None = None
    test_subset: int | None = None
    init_from: str | None = None

    def __post_init__(self) -> None:
        cnn_model_spec(self.model)
        check_choice("dataset", self.dataset, IMAGE_DATASETS)


def run_training(config: TrainRunConfig, data: ImageData, out: str | os.PathLike, resume: bool = False,
                 progress: bool = True) -> dict:
    """Train a dense model, checkpointing to ``out/checkpoint.pt`` and logging ``out/history.json``
    after every epoch; ``resume`` continues from the checkpoint. Writes ``out/model.pt`` (final
    state_dict) and ``out/metrics.json`` at the end.

    Args:
        data: the full data set; the configured subsets are drawn from it (seeded by the run's seed).
    Returns:
        the metrics record (also in ``metrics.json``).
    """
    out = Path(out)
    seed = config.train.seed
    torch.manual_seed(seed)
    data = data.subset(config.train_subset, config.test_subset, seed=seed)
    model = build_cnn_model(config.model, num_classes=data.num_classes, in_channels=data.train_x.shape[1])
    if config.init_from is not None and not resume:  # a resumed run restores its own weights
        load_weights(model, config.init_from, f"{config.model} for {config.dataset}")
    record = {"status": "running", "config": {**asdict(config), "train": config.train.record()},
              "data": data.name, "seed": seed, "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    if not resume:
        atomic_write_json(out / "metrics.json", record)
    log = lambda entry: atomic_write_json(out / "history.json", {"config": record["config"],  # noqa: E731
                                                                 "history": history + [entry]})
    history: list[dict] = []

    def on_epoch(entry: dict) -> None:
        log(entry)
        history.append(entry)
        accuracy = f", test accuracy {entry['test_accuracy']:.4f}" if "test_accuracy" in entry else ""
        print(f"epoch {entry['epoch']}: loss {entry['train_loss']:.4f}{accuracy} ({entry['epoch_time_s']:.0f} s)",
              file=sys.stderr, flush=True)

    if resume:
        history.extend(safe_torch_load(out / CHECKPOINT_FILE).get("history", []))
    result = train_cnn(model, data, config.train, progress=progress, description=config.model,
                       checkpoint_dir=out, resume=resume, on_epoch=on_epoch)
    record.update(result)
    record["status"] = "done"
    atomic_torch_save(model.state_dict(), out / "model.pt")
    atomic_write_json(out / "metrics.json", record)
    return record
