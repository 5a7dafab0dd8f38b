r"""Lottery jackpots for CNNs: a mask searched in a pre-trained CNN's frozen conv / linear weights.

Every ``Conv2d`` and ``Linear`` weight but the classifier's (the last ``Linear``, kept dense as in
the reference code) is an element site of a :class:`~gnnprune.masks.MaskEngine`, cut by magnitude
to the target in every layer. :class:`~gnnprune.masks.ScoreSearch` then moves the masks on
mini-batches of training images: the forward uses :math:`W \odot m` (a parametrization; ``W``
itself is never written), one SGD step on the scores per batch, then the exact swaps. Batch-norm
running statistics are not weights: they follow the masked network during the search and are
re-estimated on the search images at the end, for the magnitude mask alike, so that both are
compared under the same statistics.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from gnnprune.io import atomic_torch_save, atomic_write_json
from gnnprune.masks import MaskEngine, ScoreSearch, ScoreSearchConfig, kept_count

from .adapters import WeightMasks, register_weight_site
from .data import ImageData, augment, normalise
from .train import CNNTrainConfig, evaluate_cnn, reestimate_batch_norm, train_cnn


@dataclass(frozen=True)
class JackpotRunConfig:
    """One CNN jackpot run.

    Attributes:
        model: a name in :data:`cnn_bridge.models.CNN_MODELS`.
        dataset: ``cifar10`` or ``digits``.
        sparsity: fraction of every searched layer's weights removed.
        checkpoint: a dense model's state_dict to start from (else ``pretrain`` trains one).
        pretrain: dense training settings (its seed also seeds the search).
        search_epochs: passes over the training images of the score search.
        batch_size: search batch size.
        augment: pad-4 random crop + horizontal flip during the search.
        search: optimisation of the scores (the reference code's SGD, lr 0.1).
        finetune_epochs: train the kept weights under the found masks afterwards (0: off).
        finetune_lr: peak learning rate of that fine-tune.
        train_subset, test_subset: class-stratified subset sizes (``None``: whole split); the
            search and the batch-norm re-estimation see the training subset.
    """

    model: str = "resnet20"
    dataset: str = "cifar10"
    sparsity: float = 0.9
    checkpoint: str | None = None
    pretrain: CNNTrainConfig = field(default_factory=CNNTrainConfig)
    search_epochs: int = 2
    batch_size: int = 128
    augment: bool = True
    search: ScoreSearchConfig = field(default_factory=ScoreSearchConfig)
    finetune_epochs: int = 0
    finetune_lr: float = 0.01
    train_subset: int | None = None
    test_subset: int | None = None

    def __post_init__(self) -> None:
        from .experiment import IMAGE_DATASETS, check_choice
        from .models import cnn_model_spec

        cnn_model_spec(self.model)
        check_choice("dataset", self.dataset, IMAGE_DATASETS)
        if not 0.0 < self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in (0, 1), got {self.sparsity}")
        if self.search_epochs < 1 or self.batch_size < 1:
            raise ValueError("search_epochs and batch_size must be >= 1")
        if self.finetune_epochs < 0 or not self.finetune_lr > 0:
            raise ValueError("finetune_epochs must be >= 0 and finetune_lr > 0")


def searched_layers(model: nn.Module) -> list[str]:
    """Names of every ``Conv2d`` and ``Linear`` module but the last ``Linear`` (the classifier)."""
    layers = [name for name, module in model.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    linear = [name for name in layers if isinstance(model.get_submodule(name), nn.Linear)]
    return [name for name in layers if not linear or name != linear[-1]]


def magnitude_engine(model: nn.Module, layers: list[str], sparsity: float) -> MaskEngine:
    """Element sites over ``layers``, each keeping its ``kept_count`` largest ``|W|`` (ties by index)."""
    engine = MaskEngine()
    for name in layers:
        site = register_weight_site(engine, model, name, "weight")
        weight = model.get_submodule(name).weight.detach()
        engine.prune(site.name, site.numel - kept_count(site.numel, sparsity), weight.abs())
    return engine


def search_jackpot(model: nn.Module, engine: MaskEngine, data: ImageData, config: JackpotRunConfig,
                   generator: torch.Generator, progress: bool = True) -> dict:
    """Move ``engine``'s masks by the score search on ``data``'s training images; ``model``'s
    parameters stay frozen and untouched (its batch-norm statistics follow the masked network).

    Returns:
        ``{"steps", "swapped" (pairs per site over the search), "final_loss", "time_s"}``.
    """
    sites = [site.name for site in engine]
    steps_per_epoch = math.ceil(len(data.train_y) / config.batch_size)
    search = ScoreSearch(engine, sites, config.search, total_steps=config.search_epochs * steps_per_epoch)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for param in frozen:
        param.requires_grad_(False)
    for name in sites:
        module = model.get_submodule(engine.site(name).meta["module"])
        parametrize.register_parametrization(module, "weight", search.parametrization(name), unsafe=True)
    bar = tqdm(total=search.total_steps, desc="jackpot search", disable=not progress, leave=False)
    start, loss_sum, seen = time.perf_counter(), 0.0, 0
    try:
        model.train()
        for _ in range(config.search_epochs):
            order = torch.randperm(len(data.train_y), generator=generator)
            loss_sum, seen = 0.0, 0
            for begin in range(0, len(order), config.batch_size):
                index = order[begin:begin + config.batch_size]
                images = data.train_x[index]
                if config.augment:
                    images = augment(images, generator)
                search.zero_grad()
                loss = F.cross_entropy(model(normalise(images, data.mean, data.std)), data.train_y[index])
                loss.backward()
                search.step()
                loss_sum += float(loss.detach()) * len(index)
                seen += len(index)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
    finally:
        bar.close()
        for name in sites:
            module = model.get_submodule(engine.site(name).meta["module"])
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        for param in frozen:
            param.requires_grad_(True)
    return {"steps": search.steps, "swapped": dict(search.swaps), "final_loss": loss_sum / max(seen, 1),
            "time_s": time.perf_counter() - start}


def _reestimate_on(model: nn.Module, data: ImageData, batch_size: int = 500) -> None:
    """Batch-norm statistics of ``model`` averaged over ``data``'s training images (no augmentation)."""
    reestimate_batch_norm(model, (normalise(data.train_x[begin:begin + batch_size], data.mean, data.std)
                                  for begin in range(0, len(data.train_x), batch_size)))


def run_jackpot(config: JackpotRunConfig, data: ImageData, out: str | os.PathLike | None = None,
                progress: bool = True) -> dict:
    """Load or pre-train a dense CNN, cut by magnitude, search the jackpot, measure; write ``out/``.

    Test accuracy is measured for the dense model, the magnitude mask as cut, the magnitude mask
    with re-estimated batch-norm statistics, and the jackpot (same re-estimation). Writes
    ``metrics.json``, ``masks.pt`` (the engine's state), ``model.pt`` (the jackpot: dense
    weights with the dead ones zeroed, re-estimated statistics) and, after a fine-tune,
    ``model-finetuned.pt``.
    """
    from .models import build_cnn_model, load_weights

    seed = config.pretrain.seed
    torch.manual_seed(seed)
    data = data.subset(config.train_subset, config.test_subset, seed=seed)
    build = {"num_classes": data.num_classes, "in_channels": data.train_x.shape[1]}
    model = build_cnn_model(config.model, **build)
    record: dict = {"status": "running", "config": asdict(config), "data": data.name, "seed": seed,
                    "train_images": len(data.train_y), "test_images": len(data.test_y), "times_s": {}}
    clock = time.perf_counter()
    if config.checkpoint is not None:
        load_weights(model, config.checkpoint, config.model)
        record["pretrain"] = {"checkpoint": str(config.checkpoint)}
    else:
        record["pretrain"] = train_cnn(model, data, config.pretrain, progress=progress, description="pretrain")
    record["times_s"]["pretrain"] = time.perf_counter() - clock
    test = lambda m: evaluate_cnn(m, data.test_x, data.test_y, data.mean, data.std)  # noqa: E731
    accuracy = record["accuracy"] = {"dense": test(model)}
    dense_params = {name: p.detach().clone() for name, p in model.named_parameters()}

    layers = searched_layers(model)
    engine = magnitude_engine(model, layers, config.sparsity)
    magnitude_mask = engine.state_dict()
    cut = copy.deepcopy(model)
    WeightMasks(engine, cut).apply()
    accuracy["magnitude"] = test(cut)
    _reestimate_on(cut, data)
    accuracy["magnitude_bn_reestimated"] = test(cut)

    generator = torch.Generator().manual_seed(seed)
    record["search"] = search_jackpot(model, engine, data, config, generator, progress)
    record["weights_unchanged"] = all(torch.equal(p, dense_params[name]) for name, p in model.named_parameters())
    masks = WeightMasks(engine, model)
    masks.apply()
    _reestimate_on(model, data)
    accuracy["jackpot"] = test(model)
    record["changed_from_magnitude"] = {name: int((engine.mask(name) != entry["mask"]).sum())
                                        for name, entry in magnitude_mask.items()}
    kept, total = masks.kept(), masks.total()
    record["sparsity"] = {"searched_layers": 1 - kept / total, "per_layer": {
        site.name: {"entries": site.numel, "live": site.live, "sparsity": site.sparsity} for site in engine}}
    if out is not None:
        atomic_torch_save(engine.state_dict(), Path(out) / "masks.pt")
        atomic_torch_save(model.state_dict(), Path(out) / "model.pt")
    if config.finetune_epochs > 0:
        tune = CNNTrainConfig(epochs=config.finetune_epochs, batch_size=config.batch_size, lr=config.finetune_lr,
                              weight_decay=config.pretrain.weight_decay, augment=config.augment, seed=seed)
        record["finetune"] = train_cnn(model, data, tune, masks, progress=progress, description="finetune jackpot")
        accuracy["jackpot_finetuned"] = record["finetune"]["test_accuracy"]
        if out is not None:
            atomic_torch_save(model.state_dict(), Path(out) / "model-finetuned.pt")
    record["torch_threads"] = torch.get_num_threads()
    record["status"] = "done"
    if out is not None:
        atomic_write_json(Path(out) / "metrics.json", record)
    return record
