"""CNN models in plain torch, by name."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import nn

from .convnet import DigitsConvNet
from .resnet_cifar import CifarResNet
from .resnet_imagenet import ResNet50
from .vgg import VGG


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model and what input it takes (``[C, H, W]``, batch 1 for counting)."""

    build: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]


MODELS: dict[str, ModelSpec] = {
    "resnet20": ModelSpec(partial(CifarResNet, 20), (3, 32, 32)),
    "resnet56": ModelSpec(partial(CifarResNet, 56), (3, 32, 32)),
    "resnet110": ModelSpec(partial(CifarResNet, 110), (3, 32, 32)),
    "vgg16_bn": ModelSpec(VGG, (3, 32, 32)),
    "convnet": ModelSpec(DigitsConvNet, (1, 8, 8)),
    "resnet50": ModelSpec(ResNet50, (3, 224, 224)),
}


def model_spec(name: str) -> ModelSpec:
    """The spec of a model; ``ValueError`` naming the choices for an unknown name."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


def build_model(name: str, **kwargs) -> nn.Module:
    return model_spec(name).build(**kwargs)


__all__ = ["MODELS", "CifarResNet", "DigitsConvNet", "ModelSpec", "ResNet50", "VGG", "build_model", "model_spec"]
