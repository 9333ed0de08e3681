"""A user's own images: ``data.name: imagefolder`` and ``data.factory``.

``imagefolder`` reads ``data.path/train/<class>/*`` (``data.path`` absolute or relative to
``data.root``; classes are the sorted folder names, as torchvision's ``ImageFolder`` has them).
``val/`` and ``test/`` next to ``train/`` are used when present (then ``data.val_size`` is
ignored); otherwise a fixed 20% of ``train/`` (the same for every run seed, so test figures of
different runs compare) is held out as the test split and ``data.val_size`` images of the rest,
chosen by the run seed, validate. Images are decoded once, resized to ``data.image_size``
(bilinear; ``[H, W]`` or one int) and kept as ``uint8``; the decoded arrays are cached under
:func:`~prunesearch.methods.io.cache_root`. Grayscale folders give 1-channel images, anything
else RGB. ``data.mean``/``data.std`` (pixels in [0, 1]) default to ImageNet's.

``data.factory: "package.module:function"`` is called with whichever of ``root``, ``seed`` and
``image_size`` it accepts and returns ``(train, val, test)`` (or a mapping with those keys and
optionally ``num_classes``): any map-style datasets of ``(image, label)`` pairs. They are used as
they are (no normalisation, no augmentation: the datasets do their own).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunesearch.methods.errors import ConfigError, DataNotFoundError
from prunesearch.methods.io import atomic_write, cache_root
from prunesearch.methods.settings import DataSettings

__all__ = ["DatasetAdapter", "describe_factory", "describe_imagefolder", "folder_of",
           "load_factory", "load_imagefolder"]

#: The test split held out of train/ when there is no test/ folder (fixed, seed-independent).
HELD_OUT_TEST = 0.2


def folder_of(settings: DataSettings) -> Path:
    """``data.path`` made absolute (relative paths are under ``data.root``)."""
    path = Path(str(settings.path)).expanduser()
    return path if path.is_absolute() else Path(settings.root).expanduser() / path


def _missing(folder: Path, why: str) -> DataNotFoundError:
    return DataNotFoundError(f"data.path '{folder}' {why}: expected {folder}/train/<class>/*.jpg "
                             "(any image type; val/ and test/ beside train/ are optional)")


@functools.lru_cache(maxsize=16)
def _scan(split_dir: str, classes: tuple[str, ...] | None = None
          ) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
    """``(classes, ((path, label), ...))`` of one split folder in ImageFolder order."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    found, _ = find_classes(split_dir)
    if classes is None:
        classes = tuple(found)
    extra = sorted(set(found) - set(classes))
    if extra:
        raise ConfigError(f"{split_dir} has classes {extra[:5]} that train/ lacks")
    mapping = {c: i for i, c in enumerate(classes)}
    samples = make_dataset(split_dir, {c: mapping[c] for c in found}, extensions=IMG_EXTENSIONS,
                           allow_empty=True)
    return classes, tuple(samples)


def _train_scan(settings: DataSettings) -> tuple[Path, tuple[str, ...], tuple]:
    folder = folder_of(settings)
    train = folder / "train"
    if not train.is_dir():
        raise _missing(folder, "has no train/ folder")
    try:
        classes, samples = _scan(str(train.resolve()))
    except FileNotFoundError as exc:  # torchvision: no class folders
        raise _missing(folder, "has no class folders under train/") from exc
    if not samples:
        raise _missing(folder, "has no images under train/<class>/")
    return folder, classes, samples


def _mode_and_size(path: str) -> tuple[str, tuple[int, int]]:
    from PIL import Image

    with Image.open(path) as im:
        mode = "L" if im.mode in ("L", "1", "I;16", "I") else "RGB"
        return mode, (im.height, im.width)


def describe_imagefolder(settings: DataSettings) -> tuple[int, tuple[int, int, int]]:
    """``(num_classes, (C, H, W))`` of an image folder, from its class folders and first image."""
    _, classes, samples = _train_scan(settings)
    mode, size = _mode_and_size(samples[0][0])
    if settings.channels is not None:
        mode = "L" if settings.channels == 1 else "RGB"
    hw = tuple(settings.image_size) if settings.image_size else size
    return len(classes), (1 if mode == "L" else 3, int(hw[0]), int(hw[1]))


def _decode(paths: Sequence[str], mode: str, hw: tuple[int, int], resize: bool) -> np.ndarray:
    from PIL import Image

    channels = 1 if mode == "L" else 3
    out = np.empty((len(paths), hw[0], hw[1], channels), dtype=np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as im:
            im = im.convert(mode)
            if resize and (im.height, im.width) != hw:
                im = im.resize((hw[1], hw[0]), Image.BILINEAR)
            arr = np.asarray(im)
        if arr.shape[:2] != hw:
            raise ConfigError(f"{path}: image is {arr.shape[0]}x{arr.shape[1]}, the folder's "
                              f"first is {hw[0]}x{hw[1]}; set data.image_size to resize them all")
        out[i] = arr.reshape(hw[0], hw[1], channels)
    return out


def _pixels(samples: Sequence[tuple[str, int]], mode: str, hw: tuple[int, int],
            resize: bool) -> np.ndarray:
    """Decoded ``(N, H, W, C)`` uint8 pixels of ``samples``, cached by file list and size."""
    key = hashlib.sha1()
    for path, _ in samples:
        stat = os.stat(path)
        key.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    key.update(f"{mode}|{hw}|{resize}".encode())
    cache = cache_root() / "decoded" / f"imagefolder-{len(samples)}-{key.hexdigest()[:16]}.npy"
    if cache.is_file():
        try:
            pixels = np.load(cache)
            if pixels.shape[:3] == (len(samples), *hw):
                return pixels
        except (OSError, ValueError):
            pass  # torn or foreign: decode again
    pixels = _decode([p for p, _ in samples], mode, hw, resize)
    try:
        atomic_write(cache, lambda fh: np.save(fh, pixels), durable=False, unique=True)
    except OSError:
        pass  # an unwritable cache only costs decoding time
    return pixels


def load_imagefolder(settings: DataSettings, seed: int) -> Any:
    """The :class:`~prunesearch.methods.data.DataBundle` of an image folder (module docstring)."""
    from prunesearch.methods.data import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        DataBundle,
        ImageTensorDataset,
        _split_indices,
        _test_indices,
    )

    folder, classes, train_samples = _train_scan(settings)
    num_classes, shape = describe_imagefolder(settings)
    mode = "L" if shape[0] == 1 else "RGB"
    hw = (shape[1], shape[2])
    resize = settings.image_size is not None
    mean = tuple(settings.mean) if settings.mean else (IMAGENET_MEAN if shape[0] == 3 else (0.5,))
    std = tuple(settings.std) if settings.std else (IMAGENET_STD if shape[0] == 3 else (0.25,))
    if len(mean) != shape[0] or len(std) != shape[0]:
        raise ConfigError(f"data.mean/data.std need {shape[0]} values (the images' channels), "
                          f"got {len(mean)}/{len(std)}")

    def split(name: str) -> tuple | None:
        path = folder / name
        if not path.is_dir():
            return None
        _, samples = _scan(str(path.resolve()), classes)
        return samples or None

    val_samples, test_samples = split("val"), split("test")
    pool = np.arange(len(train_samples))
    if test_samples is None:
        order = np.random.default_rng(20240601).permutation(len(pool))
        n_test = max(1, int(len(pool) * HELD_OUT_TEST))
        test_pool, pool = np.sort(order[:n_test]), np.sort(order[n_test:])
        test_samples = tuple(train_samples[i] for i in test_pool)
    test_idx = _test_indices(len(test_samples), settings, seed)
    if val_samples is None:
        train_pos, val_pos = _split_indices(len(pool), settings, seed)
        train_idx, val_idx = pool[train_pos], pool[val_pos]
        val_samples = tuple(train_samples[i] for i in val_idx)
        val_idx = np.arange(len(val_samples))
    else:
        train_idx = pool
        if settings.train_subset is not None:
            rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
            train_idx = np.sort(rng.permutation(pool)[: settings.train_subset])
        val_idx = np.arange(len(val_samples))

    def part(samples: Sequence[tuple[str, int]], idx: np.ndarray) -> ImageTensorDataset:
        chosen = [samples[i] for i in idx]
        pixels = _pixels(chosen, mode, hw, resize)
        images = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))
        labels = torch.as_tensor([label for _, label in chosen], dtype=torch.int64)
        return ImageTensorDataset(images=images, labels=labels, scale=1.0 / 255.0, mean=mean,
                                  std=std, indices=idx)

    return DataBundle(name="imagefolder", train=part(train_samples, train_idx),
                      val=part(val_samples, val_idx), test=part(test_samples, test_idx),
                      num_classes=num_classes, input_shape=shape, mean=mean, std=std,
                      augmentable=bool(settings.augmentation),
                      augment_ops=tuple(settings.augmentation),
                      crop_padding=int(settings.crop_padding))


# ------------------------------------------------------------------------------ data.factory

class DatasetAdapter:
    """Any map-style dataset of ``(image, label)`` pairs with the batch interface the evaluator
    uses (:meth:`batches`, :meth:`batch`); items are collated with torch's default collate.

    Inputs of double precision (numpy's default: ``float64`` arrays) are collated to
    ``float32``, the dtype the networks are trained and timed in; every other input and every
    label is left as collated."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, indices: Sequence[int] | torch.Tensor) -> Any:
        """Collated items ``indices``."""
        from torch.utils.data import default_collate

        batch = default_collate([self.dataset[int(i)] for i in indices])
        if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor) \
                and batch[0].dtype == torch.float64:
            batch = type(batch)([batch[0].float(), *batch[1:]])
        return batch

    def batches(self, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None,
                drop_last: bool = False) -> Iterator[Any]:
        """Collated batches, shuffled from ``generator`` when asked."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield self.batch(order[start : start + batch_size])


def _as_batchable(dataset: Any) -> Any:
    return dataset if hasattr(dataset, "batches") and hasattr(dataset, "batch") \
        else DatasetAdapter(dataset)


@functools.lru_cache(maxsize=4)
def _call_factory(settings: DataSettings, seed: int) -> dict[str, Any]:
    from prunesearch.methods.objects import resolve

    factory = resolve(str(settings.factory), key="data.factory")
    if not callable(factory):
        raise ConfigError(f"data.factory: {settings.factory!r} is not callable")
    offered = {"root": settings.root, "seed": seed, "image_size": settings.image_size}
    try:
        params = inspect.signature(factory).parameters
        takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
        kwargs = {k: v for k, v in offered.items() if takes_all or k in params}
    except (TypeError, ValueError):
        kwargs = {}
    out = factory(**kwargs)
    if isinstance(out, Mapping):
        missing = {"train", "val"} - set(out)
        if missing:
            raise ConfigError(f"data.factory: {settings.factory} returned a mapping without "
                              f"{sorted(missing)}")
        parts = dict(out)
    elif isinstance(out, (tuple, list)) and len(out) in (2, 3):
        parts = dict(zip(("train", "val", "test"), out))
    else:
        raise ConfigError(f"data.factory: {settings.factory} must return (train, val, test) "
                          f"datasets or a mapping of them, got {type(out).__name__}")
    parts.setdefault("test", parts["val"])
    if parts.get("test") is None:
        parts["test"] = parts["val"]
    for name in ("train", "val", "test"):
        if len(parts[name]) == 0:
            raise ConfigError(f"data.factory: the {name} dataset is empty")
    return parts


def _factory_classes(parts: Mapping[str, Any]) -> int:
    if parts.get("num_classes"):
        return int(parts["num_classes"])
    classes = getattr(parts["train"], "classes", None)
    if classes:
        return len(classes)
    labels = []
    for i in range(len(parts["train"])):
        label = parts["train"][i][1]
        if not isinstance(label, (int, np.integer)) and not (
                isinstance(label, torch.Tensor) and label.numel() == 1):
            raise ConfigError("data.factory: labels are not class ids; return num_classes too "
                              "(a mapping with 'num_classes')")
        labels.append(int(label))
    return max(labels) + 1


def describe_factory(settings: DataSettings, seed: int = 0) -> tuple[int, tuple[int, ...]]:
    """``(num_classes, input shape)`` of a factory's datasets (from its first training item)."""
    parts = _call_factory(settings, seed)
    first = parts["train"][0][0]
    shape = tuple(first.shape) if isinstance(first, torch.Tensor) else tuple(np.shape(first))
    return _factory_classes(parts), tuple(int(v) for v in shape)


def load_factory(settings: DataSettings, seed: int) -> Any:
    """The :class:`~prunesearch.methods.data.DataBundle` of a ``data.factory``'s datasets."""
    from prunesearch.methods.data import DataBundle

    parts = _call_factory(settings, seed)
    num_classes, shape = describe_factory(settings, seed)
    return DataBundle(name=settings.source, train=_as_batchable(parts["train"]),
                      val=_as_batchable(parts["val"]), test=_as_batchable(parts["test"]),
                      num_classes=num_classes, input_shape=shape, mean=(), std=(),
                      augmentable=False, augment_ops=(), crop_padding=0)
