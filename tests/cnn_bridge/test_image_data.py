import io
import tarfile

import pytest
import torch

from cnn_bridge.data import augment, cutout, decode_cifar10_archive, load_cifar10, load_digits, normalise
from gnnprune.data import DataNotFoundError


def test_normalise():
    images = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 3, 1, 1)
    out = normalise(images, (0.0, 0.5, 0.2), (1.0, 0.5, 0.1))
    assert torch.allclose(out.view(-1), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


def test_augment_is_a_padded_shift_possibly_flipped():
    image = torch.arange(36, dtype=torch.float32).view(1, 1, 6, 6) + 1  # no zeros inside
    batch = image.repeat(32, 1, 1, 1)
    out = augment(batch, torch.Generator().manual_seed(0), pad=2)
    padded = torch.nn.functional.pad(image, (2, 2, 2, 2))[0, 0]
    crops = [padded[dy:dy + 6, dx:dx + 6] for dy in range(5) for dx in range(5)]
    candidates = crops + [c.flip(-1) for c in crops]
    seen = set()
    for sample in out[:, 0]:
        matches = [i for i, c in enumerate(candidates) if torch.equal(sample, c)]
        assert matches
        seen.add(matches[0])
    assert len(seen) > 10  # it does vary
    assert out.shape == batch.shape


def test_cutout_zeroes_the_square_around_the_drawn_centre_clipped_at_the_borders():
    images = torch.ones(64, 2, 6, 6)
    out = cutout(images, torch.Generator().manual_seed(3), size=3)
    draws = torch.Generator().manual_seed(3)  # the same draws, the square built by hand
    centre_y, centre_x = torch.randint(0, 6, (64, 1), generator=draws), torch.randint(0, 6, (64, 1), generator=draws)
    sizes = set()
    for image, cy, cx in zip(out, centre_y.view(-1).tolist(), centre_x.view(-1).tolist()):
        expected = torch.ones(6, 6)
        expected[max(cy - 1, 0):cy + 2, max(cx - 1, 0):cx + 2] = 0.0  # rows cy-1 .. cy+1, clipped
        assert torch.equal(image[0], expected) and torch.equal(image[1], expected)  # every channel alike
        sizes.add(int((expected == 0).sum()))
    assert sizes == {4, 6, 9}  # in a corner, on an edge, inside
    even = cutout(torch.ones(1, 1, 32, 32), torch.Generator().manual_seed(0), size=16)
    assert int((even == 0).sum()) <= 256
    assert torch.equal(cutout(torch.ones(2, 1, 4, 4), torch.Generator(), size=9), torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="cutout size"):
        cutout(images, torch.Generator(), size=0)


def test_digits_and_stratified_subset():
    digits = load_digits()
    assert digits.train_x.shape == (1400, 1, 8, 8) and digits.train_x.dtype == torch.uint8
    assert len(digits.test_y) == 397 and digits.num_classes == 10
    small = digits.subset(train=100, test=50, seed=1)
    assert torch.equal(small.train_y.bincount(), torch.full((10,), 10))
    assert small.test_y.bincount().min() == 5
    with pytest.raises(ValueError, match="subset size"):
        digits.subset(train=5000)


def fake_cifar_archive(path, colours):
    from PIL import Image

    with tarfile.open(path, "w:gz") as tar:
        for split, klass, name, colour in colours:
            buffer = io.BytesIO()
            Image.new("RGB", (32, 32), colour).save(buffer, format="JPEG", quality=95)
            info = tarfile.TarInfo(f"{split}/{klass}/{name}.jpg")
            info.size = len(buffer.getvalue())
            buffer.seek(0)
            tar.addfile(info, buffer)


def test_cifar_decode_and_cache(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "cifar10").mkdir(parents=True)
    fake_cifar_archive(root / "cifar10" / "cifar10-jpeg.tar.gz",
                       [("train", "truck", "0000", (250, 0, 0)), ("train", "airplane", "0000", (0, 250, 0)),
                        ("train", "cat", "0001", (0, 0, 250)), ("test", "dog", "0000", (100, 100, 100))])
    monkeypatch.delenv("GNNPRUNE_CACHE", raising=False)
    monkeypatch.delenv("GNNPRUNE_DATA", raising=False)
    data = load_cifar10(root, progress=False)
    assert (root / "cache" / "cifar10" / "cifar10.npz").exists()
    assert data.train_y.tolist() == [0, 3, 9]  # sorted by class: airplane, cat, truck
    assert data.train_x.shape == (3, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert abs(int(data.train_x[2, 0, 16, 16]) - 250) <= 3 and int(data.train_x[2, 1, 16, 16]) <= 3
    assert data.test_y.tolist() == [5]
    again = load_cifar10(root, progress=False)  # from the cache
    assert torch.equal(again.train_x, data.train_x)


def test_cifar_bad_archive(tmp_path):
    path = tmp_path / "a.tar.gz"
    fake_cifar_archive(path, [("train", "unicorn", "0000", (0, 0, 0))])
    with pytest.raises(ValueError, match="unknown class folder 'unicorn'"):
        decode_cifar10_archive(path)


def test_cifar_missing_names_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GNNPRUNE_DATA", raising=False)
    with pytest.raises(DataNotFoundError, match="CIFAR-10"):
        load_cifar10(tmp_path / "nothing")
