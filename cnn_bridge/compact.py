r"""Physical removal of pruned output channels, with ``torch-pruning``'s dependency graph.

The dependency graph traces the model once and groups every parameter slice that must go with
an output channel (its batch norm, the next layer's input slice, anything tied by additions).
A convolution is *prunable* here when its group removes output channels of that convolution
alone: e.g. every VGG convolution, and the internal convolution (``conv1``) of each CIFAR ResNet
basic block. The outputs of a block's second convolution are added to the parameter-free
zero-padding shortcut, which couples channels across all blocks of a stage (the traced graph
even couples them across stages, since the padding is not a traced module), so those channels
are left whole.

A compact model is saved as its ``state_dict`` plus an architecture config (model name and the
output channels of every prunable convolution), and rebuilt from both without pickled modules.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch_pruning as tp
from torch import Tensor, nn

from gnnprune.io import atomic_torch_save, atomic_write_json, safe_torch_load

from .models import build_cnn_model

_OUT = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
_IN = (tp.prune_conv_in_channels, tp.prune_linear_in_channels)


@dataclass(frozen=True)
class PrunableLayer:
    """A convolution whose output channels can be removed alone.

    Attributes:
        conv: module name of the convolution.
        bn: module name of its batch norm (or ``None``).
        consumers: module names of the conv/linear layers taking its channels as input.
    """

    conv: str
    bn: str | None
    consumers: tuple[str, ...]


def dependency_graph(model: nn.Module, input_shape: tuple[int, ...]) -> tp.DependencyGraph:
    was_training = model.training
    model.eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, *input_shape))
    model.train(was_training)
    return graph


def prunable_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[PrunableLayer]:
    """The convolutions whose output-channel group touches no other layer's outputs, in model order."""
    graph = dependency_graph(model, input_shape)
    names = {module: name for name, module in model.named_modules()}
    layers = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d) or module.groups != 1:
            continue
        group = graph.get_pruning_group(module, tp.prune_conv_out_channels, idxs=[0])
        targets = [(dep.target.module, dep.handler) for dep, _ in group]
        outs = {m for m, h in targets if h in _OUT}
        if outs != {module}:
            continue
        bns = [names[m] for m, _ in targets if isinstance(m, nn.BatchNorm2d)]
        consumers = tuple(dict.fromkeys(names[m] for m, h in targets if h in _IN))
        if len(bns) > 1 or not consumers:
            continue
        layers.append(PrunableLayer(name, bns[0] if bns else None, consumers))
    return layers


def remove_channels(model: nn.Module, keep: dict[str, Tensor], input_shape: tuple[int, ...]) -> nn.Module:
    """Remove the dead output channels of each prunable convolution, in place.

    Args:
        keep: ``{conv name: bool [C_out]}``, ``True`` = kept (at least one per layer).
        input_shape: ``[C, H, W]`` of one input, for tracing.
    Returns:
        ``model``, now smaller; its outputs equal the masked model's when the dead channels'
        activations were exactly zero.
    """
    graph = dependency_graph(model, input_shape)
    for name, mask in keep.items():
        if not mask.any():
            raise ValueError(f"{name}: cannot remove every output channel")
        dead = (~mask).nonzero().view(-1).tolist()
        if dead:
            graph.get_pruning_group(model.get_submodule(name), tp.prune_conv_out_channels, idxs=dead).prune()
    return model


def architecture(model_name: str, model: nn.Module, layers: list[PrunableLayer], **build_kwargs) -> dict:
    """The config a compact model is rebuilt from: ``{"model", "build", "channels": {conv: C_out}}``."""
    return {"model": model_name, "build": dict(build_kwargs),
            "channels": {layer.conv: model.get_submodule(layer.conv).out_channels for layer in layers}}


def rebuild(config: dict, input_shape: tuple[int, ...]) -> nn.Module:
    """An uninitialised-weights model with the config's channel counts (load its state_dict next)."""
    model = build_cnn_model(config["model"], **config["build"])
    keep = {}
    for name, channels in config["channels"].items():
        dense = model.get_submodule(name).out_channels
        if not 1 <= channels <= dense:
            raise ValueError(f"architecture config: {name} has {channels} channels, must be in [1, {dense}]")
        keep[name] = torch.arange(dense) < channels
    return remove_channels(model, keep, input_shape)


def save_compact(folder: str | os.PathLike, model: nn.Module, config: dict) -> None:
    """Write ``folder/compact.pt`` (state_dict) and ``folder/architecture.json``."""
    folder = Path(folder)
    atomic_torch_save(model.state_dict(), folder / "compact.pt")
    atomic_write_json(folder / "architecture.json", config)


def load_compact(folder: str | os.PathLike, input_shape: tuple[int, ...]) -> nn.Module:
    """Rebuild a model written by :func:`save_compact` (``weights_only`` loading)."""
    import json

    folder = Path(folder)
    config = json.loads((folder / "architecture.json").read_text())
    model = rebuild(config, input_shape)
    model.load_state_dict(safe_torch_load(folder / "compact.pt"))
    return model.eval()
