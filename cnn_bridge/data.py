"""Image data: CIFAR-10 (decoded once into cached uint8 arrays) and scikit-learn's 8x8 digits.

Images are held as ``uint8`` tensors of shape ``[N, C, H, W]``; :func:`normalise` and
:func:`augment` turn a batch of them into float inputs in torch (no torchvision).
"""
from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gnnprune.data.paths import cache_dir, find
from gnnprune.io import atomic_write_bytes

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_ARCHIVE = "cifar10-jpeg.tar.gz"


@dataclass(frozen=True)
class ImageData:
    """A train/test image classification set.

    Attributes:
        train_x, test_x: ``uint8`` images, shape ``[N, C, H, W]``.
        train_y, test_y: ``int64`` labels, shape ``[N]``.
        mean, std: per-channel normalisation on the ``[0, 1]`` scale.
        num_classes: number of classes.
        name: what the data set is (recorded in metrics).
    """

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    name: str

    def subset(self, train: int | None = None, test: int | None = None, seed: int = 0) -> "ImageData":
        """A class-stratified random subset (``None`` keeps a split whole)."""
        generator = torch.Generator().manual_seed(seed)
        pick = lambda x, y, n: (x, y) if n is None else _stratified(x, y, n, generator)  # noqa: E731
        train_x, train_y = pick(self.train_x, self.train_y, train)
        test_x, test_y = pick(self.test_x, self.test_y, test)
        return ImageData(train_x, train_y, test_x, test_y, self.mean, self.std, self.num_classes,
                         f"{self.name}[train={len(train_y)},test={len(test_y)}]")

    def held_out(self, train: int | None, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """``n`` class-stratified training images outside ``subset(train, seed=seed)``'s training split
        (a validation split), as ``(uint8 [n, C, H, W], labels [n])``. With ``train=None`` every training
        image is used for training and none is held out, so this raises ``ValueError``."""
        if train is None:
            raise ValueError("no training image is held out when the whole training split is used; give a train subset")
        used = _stratified_index(self.train_y, train, torch.Generator().manual_seed(seed))
        rest = torch.ones(len(self.train_y), dtype=torch.bool)
        rest[used] = False
        rest = rest.nonzero().view(-1)
        pick = rest[_stratified_index(self.train_y[rest], n, torch.Generator().manual_seed(seed + 1))]
        return self.train_x[pick], self.train_y[pick]


def _stratified(x: Tensor, y: Tensor, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    index = _stratified_index(y, n, generator)
    return x[index], y[index]


def _stratified_index(y: Tensor, n: int, generator: torch.Generator) -> Tensor:
    if not 1 <= n <= len(y):
        raise ValueError(f"subset size must be in [1, {len(y)}], got {n}")
    order = torch.randperm(len(y), generator=generator)
    # round-robin over classes in random order: every class gets n / C (+-1) examples
    rank = torch.empty_like(order)
    labels = y[order]
    for c in labels.unique():
        where = (labels == c).nonzero().view(-1)
        rank[where] = torch.arange(len(where))
    index = order[torch.argsort(rank * (int(y.max()) + 1) + labels, stable=True)[:n]]
    return index.sort().values


def normalise(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """``uint8 [B, C, H, W]`` -> ``float32 [B, C, H, W]``, ``(x / 255 - mean) / std``."""
    mean_t = torch.tensor(mean).view(1, -1, 1, 1)
    std_t = torch.tensor(std).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean_t) / std_t


def augment(images: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Standard CIFAR augmentation: zero-pad by ``pad``, random crop back, random horizontal flip.

    Args:
        images: ``[B, C, H, W]`` (any dtype).
        generator: the source of randomness (one per run, so runs are reproducible).
    Returns:
        ``[B, C, H, W]``, each image shifted by ``(dy, dx) in [-pad, pad]^2`` and flipped w.p. 1/2.
    """
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (dy.view(b, 1) + torch.arange(h).view(1, h)).view(b, 1, h, 1)
    cols = (dx.view(b, 1) + torch.arange(w).view(1, w)).view(b, 1, 1, w)
    flip = torch.rand(b, generator=generator) < 0.5
    cols = torch.where(flip.view(b, 1, 1, 1), cols.flip(-1), cols)
    batch = torch.arange(b).view(b, 1, 1, 1)
    channel = torch.arange(images.shape[1]).view(1, -1, 1, 1)
    return padded[batch, channel, rows, cols]


def cutout(images: Tensor, generator: torch.Generator, size: int) -> Tensor:
    """Cutout (DeVries & Taylor, 2017): zero one ``size x size`` square of every image.

    The square's centre :math:`(c_y, c_x)` is uniform over the pixels and the square covers rows
    :math:`[c_y - \\lfloor s/2 \\rfloor, c_y - \\lfloor s/2 \\rfloor + s)` (likewise columns), clipped
    at the borders, so it may lie partly outside. Applied to normalised images, zero is the
    mean colour, as in the reference code.

    Args:
        images: ``[B, C, H, W]`` floating point.
        generator: the source of randomness.
        size: side of the square in pixels (``>= 1``).
    Returns:
        ``[B, C, H, W]``, the images with their squares set to zero.
    """
    if size < 1:
        raise ValueError(f"cutout size must be >= 1, got {size}")
    b, _, h, w = images.shape
    top = torch.randint(0, h, (b, 1), generator=generator) - size // 2
    left = torch.randint(0, w, (b, 1), generator=generator) - size // 2
    rows, cols = torch.arange(h).view(1, h), torch.arange(w).view(1, w)
    in_rows = (rows >= top) & (rows < top + size)
    in_cols = (cols >= left) & (cols < left + size)
    hole = in_rows.view(b, 1, h, 1) & in_cols.view(b, 1, 1, w)
    return images.masked_fill(hole, 0.0)


def load_digits() -> ImageData:
    """scikit-learn's bundled 8x8 digits (1,797 images, no download), split 1,400 / 397.

    Pixel values 0..16 are scaled to 0..255 so the images are ``uint8`` like CIFAR's.
    """
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = torch.from_numpy((bunch.images * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    train, test = order[:1400], order[1400:]
    mean = float(images.float().mean() / 255.0)
    std = float(images.float().std() / 255.0)
    return ImageData(images[train], labels[train], images[test], labels[test], (mean,), (std,), 10, "digits")


def decode_cifar10_archive(archive: str | os.PathLike) -> dict[str, np.ndarray]:
    """Decode ``train/<class>/*.jpg`` and ``test/<class>/*.jpg`` of the archive with Pillow.

    Returns:
        ``{"train_x": uint8 [50000, 3, 32, 32], "train_y": int64 [50000], "test_x": ..., "test_y": ...}``
        in archive order sorted by (split, class, file name).
    """
    from PIL import Image

    members: dict[str, list[tuple[str, int, bytes]]] = {"train": [], "test": []}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or parts[0] not in members:
                continue
            if parts[1] not in CIFAR10_CLASSES:
                raise ValueError(f"{archive}: unknown class folder {parts[1]!r} in {member.name}")
            members[parts[0]].append((member.name, CIFAR10_CLASSES.index(parts[1]), tar.extractfile(member).read()))
    arrays = {}
    for split, items in members.items():
        items.sort(key=lambda item: (item[1], item[0]))
        images = np.empty((len(items), 3, 32, 32), dtype=np.uint8)
        for i, (name, _, data) in enumerate(items):
            image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            if image.shape != (32, 32, 3):
                raise ValueError(f"{archive}: {name} has shape {image.shape}, expected 32x32 RGB")
            images[i] = image.transpose(2, 0, 1)
        arrays[f"{split}_x"] = images
        arrays[f"{split}_y"] = np.array([label for _, label, _ in items], dtype=np.int64)
    return arrays


def load_cifar10(data_root: str | os.PathLike | None = None, progress: bool = True) -> ImageData:
    """CIFAR-10 from ``<root>/cifar10/cifar10-jpeg.tar.gz``, decoded once into ``<cache>/cifar10/cifar10.npz``.

    Raises:
        DataNotFoundError: naming every path tried.
    """
    folder = find("cifar10", CIFAR10_ARCHIVE, data_root, what="CIFAR-10 (cifar10-jpeg.tar.gz)")
    cached = cache_dir(data_root) / "cifar10" / "cifar10.npz"
    if not cached.exists():
        if progress:
            print(f"decoding {folder / CIFAR10_ARCHIVE} into {cached} (once)", file=__import__("sys").stderr)
        arrays = decode_cifar10_archive(folder / CIFAR10_ARCHIVE)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(cached, buffer.getvalue())
    with np.load(cached) as arrays:
        tensors = {key: torch.from_numpy(arrays[key].copy()) for key in ("train_x", "train_y", "test_x", "test_y")}
    return ImageData(tensors["train_x"], tensors["train_y"], tensors["test_x"], tensors["test_y"],
                     CIFAR10_MEAN, CIFAR10_STD, 10, "cifar10")
