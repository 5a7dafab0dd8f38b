"""CNN models in plain torch, by name."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import nn

from gnnprune.io import safe_torch_load

from .convnet import DigitsConvNet
from .g_ghost import GGhostCifarResNet, GGhostStage
from .ghost import GhostCifarResNet, GhostConv
from .resnet_cifar import CifarResNet
from .resnet_imagenet import ResNet50
from .rmnet_cifar import PlainCifarNet
from .vgg import VGG


@dataclass(frozen=True)
class CNNModelSpec:
    """How to build a model and what input it takes (``[C, H, W]``, batch 1 for counting)."""

    build: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]


CNN_MODELS: dict[str, CNNModelSpec] = {
    "resnet20": CNNModelSpec(partial(CifarResNet, 20), (3, 32, 32)),
    "resnet56": CNNModelSpec(partial(CifarResNet, 56), (3, 32, 32)),
    "resnet110": CNNModelSpec(partial(CifarResNet, 110), (3, 32, 32)),
    "rmnet20": CNNModelSpec(partial(PlainCifarNet, 20), (3, 32, 32)),
    "rmnet56": CNNModelSpec(partial(PlainCifarNet, 56), (3, 32, 32)),
    "rmnet110": CNNModelSpec(partial(PlainCifarNet, 110), (3, 32, 32)),
    "ghost_resnet20": CNNModelSpec(partial(GhostCifarResNet, 20), (3, 32, 32)),
    "ghost_resnet56": CNNModelSpec(partial(GhostCifarResNet, 56), (3, 32, 32)),
    "g_ghost_resnet20": CNNModelSpec(partial(GGhostCifarResNet, 20), (3, 32, 32)),
    "g_ghost_resnet56": CNNModelSpec(partial(GGhostCifarResNet, 56), (3, 32, 32)),
    "vgg16_bn": CNNModelSpec(VGG, (3, 32, 32)),
    "convnet": CNNModelSpec(DigitsConvNet, (1, 8, 8)),
    "resnet50": CNNModelSpec(ResNet50, (3, 224, 224)),
}


def cnn_model_spec(name: str) -> CNNModelSpec:
    """The spec of a model; ``ValueError`` naming the choices for an unknown name."""
    try:
        return CNN_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(CNN_MODELS)}") from None


def build_cnn_model(name: str, **kwargs) -> nn.Module:
    return cnn_model_spec(name).build(**kwargs)


def load_weights(model: nn.Module, path: str | os.PathLike, name: str = "this model") -> nn.Module:
    """Load into ``model`` the state_dict in ``path``: a saved ``state_dict`` (``model.pt``) or a
    training checkpoint holding one under ``"model"``; returns ``model``.

    Raises:
        ValueError: naming the file (and ``name``, the model it was meant for) when the file is not
            a state_dict that fits the model.
    """
    state = safe_torch_load(path)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ValueError(f"{path} is not a state_dict of {name}: {reason}") from None
    return model


__all__ = ["CNNModelSpec", "CNN_MODELS", "CifarResNet", "DigitsConvNet", "GGhostCifarResNet", "GGhostStage",
           "GhostCifarResNet", "GhostConv",
           "PlainCifarNet", "ResNet50", "VGG",
           "build_cnn_model", "cnn_model_spec", "load_weights"]
