"""Dataset registry, splits and loaders (digits embedded; CIFAR-10 on the real data)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from prunesearch.methods.data import (
    DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    augment_batch,
    load_dataset,
)
from prunesearch.methods.errors import DataNotFoundError, PrunesearchError, UnknownNameError
from prunesearch.methods.settings import DataSettings

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PRUNESEARCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UnknownNameError) as err:
        load_dataset(DataSettings(name="imagenet"), seed=0)
    message = str(err.value)
    assert "imagenet" in message and "cifar10" in message and "digits" in message
    assert set(DATASETS) >= {"digits", "cifar10"}


def test_digits_needs_no_data_root_and_splits_are_seeded(tmp_path):
    settings = DataSettings(name="digits", root=str(tmp_path / "nothing-here"), val_size=200)
    a = load_dataset(settings, seed=0)
    b = load_dataset(settings, seed=0)
    c = load_dataset(settings, seed=1)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10 and not a.augmentable
    assert len(a.val) == 200
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    # Splits are disjoint, identical for the same seed, different for another seed; the test
    # split does not move with the seed (it is never used for search decisions).
    ids = [set(s.indices.tolist()) for s in (a.train, a.val, a.test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert torch.equal(a.val.indices, b.val.indices)
    assert not torch.equal(a.val.indices, c.val.indices)
    assert torch.equal(a.test.indices, c.test.indices)
    x, y = a.train.batch(slice(None))
    assert x.shape == (len(a.train), 1, 8, 8) and y.dtype == torch.int64
    # Normalised with the training pool's statistics.
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1.0) < 0.05
    item, label = a.train[3]
    assert torch.equal(item, x[3]) and label == int(y[3])


def test_train_subset_and_val_size_validation():
    small = load_dataset(DataSettings(name="digits", val_size=100, train_subset=50), seed=3)
    assert len(small.train) == 50 and len(small.val) == 100
    with pytest.raises(ValueError, match="val_size"):
        load_dataset(DataSettings(name="digits", val_size=5000), seed=0)


def test_missing_cifar_names_folder_and_layout(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        load_dataset(DataSettings(name="cifar10", root=str(tmp_path)), seed=0)
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, PrunesearchError)
    assert str(tmp_path) in message
    assert "cifar10-jpeg/train/<class>/*.jpg" in message and "cifar-10-batches-py" in message
    assert "\n" not in message


def test_failed_download_is_a_data_error(tmp_path, monkeypatch):
    import torchvision.datasets
    import torchvision.datasets.cifar

    def offline(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataNotFoundError, match="no network"):
        load_dataset(DataSettings(name="cifar10", root=str(tmp_path), download=True), seed=0)


def test_torchvision_cifar_layout(tmp_path, monkeypatch):
    """torchvision's cifar-10-batches-py layout (tiny fake batches; md5 check bypassed)."""
    import torchvision.datasets
    import torchvision.datasets.cifar

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, 20).tolist()}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, fh)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    bundle = load_dataset(DataSettings(name="cifar10", root=str(tmp_path), val_size=10), seed=0)
    assert len(bundle.train) == 90 and len(bundle.val) == 10 and len(bundle.test) == 20
    with open(folder / "test_batch", "rb") as fh:
        raw = pickle.load(fh)
    first = torch.from_numpy(raw["data"][0].reshape(3, 32, 32).astype(np.float32) / 255.0)
    expected = (first - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(
        IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(bundle.test[0][0], expected, atol=1e-6)
    assert bundle.test[0][1] == raw["labels"][0]


@pytest.mark.data
def test_cifar10_jpeg_loader_on_real_data(data_root):
    from PIL import Image

    settings = DataSettings(name="cifar10", root=str(data_root), val_size=40, train_subset=60,
                            test_subset=30)
    bundle = load_dataset(settings, seed=0)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (60, 40, 30)
    assert bundle.input_shape == (3, 32, 32) and bundle.augmentable
    assert bundle.mean == IMAGENET_MEAN and bundle.std == IMAGENET_STD
    assert not set(bundle.train.indices.tolist()) & set(bundle.val.indices.tolist())
    # Test item k is file number indices[k] of the ImageFolder order (alphabetical classes).
    test_dir = Path(data_root) / "cifar10-jpeg" / "test"
    classes = sorted(p.name for p in test_dir.iterdir())
    files = [(f, c) for c, name in enumerate(classes) for f in sorted((test_dir / name).iterdir())]
    k = 5
    path, label = files[int(bundle.test.indices[k])]
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    expected = (torch.from_numpy(pixels).permute(2, 0, 1)
                - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    image, got_label = bundle.test[k]
    assert got_label == label
    assert torch.allclose(image, expected, atol=1e-6)
    # The decoded subset is cached; a second load returns the same pixels.
    again = load_dataset(settings, seed=0)
    assert torch.equal(again.train.images, bundle.train.images)


def test_augment_batch_crops_and_flips():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    flipped_or_same = augment_batch(images, generator=gen, padding=0)
    for i in range(2):
        assert torch.equal(flipped_or_same[i], images[i]) or torch.equal(
            flipped_or_same[i], images[i].flip(2))
    shifted = augment_batch(images, generator=torch.Generator().manual_seed(1), padding=2)
    assert shifted.shape == images.shape
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, y : y + 8, x : x + 8] for y in range(5) for x in range(5)]
        assert any(torch.equal(shifted[i], w) or torch.equal(shifted[i], w.flip(2))
                   for w in windows)


def test_image_size_is_one_int_or_h_w_and_bad_sizes_are_refused():
    from prunesearch.search.settings import ConfigError, build_section

    # One int (as the config's comment and `--set data.image_size=32` give it) means square.
    assert build_section(DataSettings, {"image_size": 32}).image_size == (32, 32)
    assert build_section(DataSettings, {"image_size": [24, 40]}).image_size == (24, 40)
    assert build_section(DataSettings, {"image_size": [28]}).image_size == (28, 28)
    with pytest.raises((ConfigError, ValueError), match="image_size"):
        build_section(DataSettings, {"image_size": [24, 40, 3]})
    with pytest.raises((ConfigError, ValueError), match="image_size"):
        build_section(DataSettings, {"image_size": [0, 40]})
    with pytest.raises((ConfigError, ValueError), match="image_size"):
        build_section(DataSettings, {"image_size": 0})
