"""Datasets by name: splits, normalisation and a small in-memory image dataset.

``load_dataset(settings, seed=...)`` returns a :class:`DataBundle` of three in-memory datasets:
``train`` and ``val`` carved from the training set with a seeded permutation, and ``test`` (never
used for search decisions). Images are held as ``uint8`` tensors and normalised on access, so a
50,000-image CIFAR-10 training set costs 150 MB, not 600 MB.

Registered datasets (:data:`DATASETS`):

* ``digits``: scikit-learn's bundled 8x8 digits (values 0..16), needs no data root. The library
  has no test split, so a fixed 20% (independent of the run seed) is held out as the test set.
* ``cifar10``: ``data.root/cifar10-jpeg/{train,test}/<class>/*.jpg`` (ImageFolder layout,
  alphabetical classes = CIFAR-10 label ids) or torchvision's ``data.root/cifar-10-batches-py``.
  Normalised with the ImageNet mean/std, which is what the pretrained CIFAR ResNets expect.
  JPEGs are decoded only for the images the splits use, and the decoded ``uint8`` array of that
  subset is cached as ``.npy`` under :func:`cache_root` (decoding runs at ~4,400 images/s on one
  core here, so the cache matters for the full 50,000-image set and for many evaluator actors).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from prunesearch.methods.errors import ConfigError, DataNotFoundError, lookup
from prunesearch.methods.io import atomic_write, cache_root
from prunesearch.methods.settings import DataSettings

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DataBundle",
    "DatasetInfo",
    "ImageTensorDataset",
    "augment_batch",
    "cache_root",
    "check_val_size",
    "dataset_info",
    "load_dataset",
]

#: Fine-tuning augmentation ops (``data.augmentation``).
AUGMENTATIONS = ("crop", "flip")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)




class ImageTensorDataset(Dataset):
    """Images held in memory as integers, normalised on access.

    ``dataset[i]`` returns ``(image, label)`` with ``image`` a float32 ``(C, H, W)`` tensor equal
    to ``(pixels * scale - mean) / std``. :meth:`batch` and :meth:`batches` do the same for many
    images at once, which is much faster than a ``DataLoader`` over single items.

    Args:
        images: ``(N, C, H, W)`` integer tensor (``uint8`` pixels).
        labels: ``(N,)`` integer labels.
        scale: Factor mapping pixel values to [0, 1] (1/255 for 8-bit images, 1/16 for digits).
        mean: Per-channel mean of the scaled pixels.
        std: Per-channel standard deviation of the scaled pixels.
        indices: Position of every image in its source (the split's image files, or the library's
            array for ``digits``; default ``0..N-1``): which images a split holds.
    """

    def __init__(self, *, images: torch.Tensor, labels: torch.Tensor, scale: float,
                 mean: Sequence[float], std: Sequence[float],
                 indices: Sequence[int] | torch.Tensor | None = None) -> None:
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got "
                             f"{tuple(labels.shape)}")
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ValueError(f"mean/std need {images.shape[1]} channels, got {len(mean)}/{len(std)}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.scale = float(scale)
        self.indices = (torch.arange(images.shape[0]) if indices is None
                        else torch.as_tensor(np.asarray(indices, dtype=np.int64)))
        if self.indices.shape != (images.shape[0],):
            raise ValueError(f"indices must have shape ({images.shape[0]},)")
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self._normalise(self.images[index : index + 1])[0]
        return x, int(self.labels[index])

    def _normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.to(torch.float32) * self.scale - self._mean) / self._std

    def batch(self, indices: Sequence[int] | torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images and labels for ``indices`` (any tensor index or slice)."""
        if not isinstance(indices, (slice, torch.Tensor)):
            indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return self._normalise(self.images[indices]), self.labels[indices]

    def batches(self, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None,
                drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate over normalised ``(images, labels)`` batches.

        Args:
            batch_size: Images per batch.
            shuffle: Visit the images in a random order drawn from ``generator``.
            generator: Source of the shuffle order (seed it for reproducible runs).
            drop_last: Skip a final batch smaller than ``batch_size``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield self.batch(order[start : start + batch_size])

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageTensorDataset:
        """A dataset of the given items (shares normalisation)."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ImageTensorDataset(images=self.images[idx], labels=self.labels[idx],
                                  scale=self.scale, mean=self._mean.flatten().tolist(),
                                  std=self._std.flatten().tolist(), indices=self.indices[idx])


@dataclasses.dataclass(frozen=True)
class DataBundle:
    """The three splits of one dataset plus what models and training need to know about it.

    Attributes:
        name: Registry name of the dataset.
        train: Training images (after carving out ``val`` and taking ``train_subset``).
        val: Validation images carved from the training set (search decisions use these).
        test: Held-out test images (reporting only).
        num_classes: Number of labels.
        input_shape: ``(C, H, W)`` of one image.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
        augmentable: Augmentation applies (images of at least 32 px for the built-in sets;
            ``data.augmentation`` non-empty for image folders).
        augment_ops: Which ops (:data:`AUGMENTATIONS`) augmentation applies.
        crop_padding: Random-crop padding in pixels.
    """

    name: str
    train: ImageTensorDataset
    val: ImageTensorDataset
    test: ImageTensorDataset
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentable: bool
    augment_ops: tuple[str, ...] = AUGMENTATIONS
    crop_padding: int = 4


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a registered dataset (known without loading it).

    ``describe(settings) -> (num_classes, input_shape)``, when set, gives the facts of datasets
    whose classes and image size come from the settings (``imagefolder``); ``num_classes`` and
    ``input_shape`` are then what :func:`dataset_info` returns for those settings.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    loader: Callable[[DataSettings, int], DataBundle]
    #: Images in the training split before ``val`` is carved from it, where known without
    #: loading (lets a too large ``data.val_size`` be refused before anything starts).
    train_size: int | None = None
    describe: Callable[[DataSettings], tuple[int, tuple[int, int, int]]] | None = None


def check_val_size(settings: DataSettings, n_train: int) -> None:
    """Refuse a ``data.val_size`` that leaves no training images.

    Raises:
        ConfigError: ``val_size`` is not smaller than ``n_train``.
    """
    if settings.val_size >= n_train:
        raise ConfigError(f"data.val_size: {settings.val_size} must be smaller than the "
                          f"{n_train} training images of '{settings.name}' (the validation split "
                          "is carved from them)")


def _split_indices(n_train: int, settings: DataSettings, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, val) index sets, each sorted (sequential file access)."""
    check_val_size(settings, n_train)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    perm = rng.permutation(n_train)
    val = perm[: settings.val_size]
    train = perm[settings.val_size :]
    if settings.train_subset is not None:
        train = train[: settings.train_subset]
    return np.sort(train), np.sort(val)


def _test_indices(n_test: int, settings: DataSettings, seed: int) -> np.ndarray:
    if settings.test_subset is None or settings.test_subset >= n_test:
        return np.arange(n_test)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    return np.sort(rng.choice(n_test, size=settings.test_subset, replace=False))


# ---------------------------------------------------------------------------------------- digits

#: Images in scikit-learn's bundled digits set (``load_digits``).
_DIGITS_IMAGES = 1797


def _digits_test_size(n_images: int) -> int:
    return n_images // 5


def _load_digits(settings: DataSettings, seed: int) -> DataBundle:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.uint8)).unsqueeze(1)  # (N, 1, 8, 8), 0..16
    labels = torch.from_numpy(digits.target.astype(np.int64))
    # The library has no test split: hold out a fixed 20%, the same for every run seed, so test
    # figures of different runs are comparable.
    order = np.random.default_rng(20240601).permutation(len(labels))
    n_test = _digits_test_size(len(labels))
    test_pool, train_pool = np.sort(order[:n_test]), np.sort(order[n_test:])
    train_idx, val_idx = _split_indices(len(train_pool), settings, seed)
    train_idx, val_idx = train_pool[train_idx], train_pool[val_idx]
    test_idx = test_pool[_test_indices(len(test_pool), settings, seed)]
    scale = 1.0 / 16.0
    pool = images[torch.from_numpy(train_pool)].to(torch.float32) * scale
    mean, std = (float(pool.mean()),), (float(pool.std()),)

    def part(idx: np.ndarray) -> ImageTensorDataset:
        t = torch.from_numpy(idx)
        return ImageTensorDataset(images=images[t], labels=labels[t], scale=scale, mean=mean,
                                  std=std, indices=idx)

    return DataBundle(name="digits", train=part(train_idx), val=part(val_idx),
                      test=part(test_idx), num_classes=10, input_shape=(1, 8, 8), mean=mean,
                      std=std, augmentable=False)


# --------------------------------------------------------------------------------------- cifar10

def _cifar_missing(root: Path, extra: str = "") -> DataNotFoundError:
    return DataNotFoundError(
        f"data.root '{root}' has no CIFAR-10: expected {root}/cifar10-jpeg/train/<class>/*.jpg "
        f"(and test/) or torchvision's {root}/cifar-10-batches-py{extra}"
    )


def _decode_jpegs(paths: Sequence[str]) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(paths), 32, 32, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
        if arr.shape != (32, 32, 3):
            raise ValueError(f"{path}: expected a 32x32 RGB image, got shape {arr.shape}")
        out[i] = arr
    return out


@functools.lru_cache(maxsize=8)
def _scan_image_folder(split_dir: str) -> tuple[tuple[str, int], ...]:
    """``(path, label)`` of every image, in ImageFolder order (sorted classes, sorted files)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    _, class_to_idx = find_classes(split_dir)
    return tuple(make_dataset(split_dir, class_to_idx, extensions=IMG_EXTENSIONS))


def _jpeg_split(split_dir: Path, indices: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Decode the images ``indices`` (ImageFolder order) of one split; cached as ``.npy``.

    Returns ``(pixels NHWC uint8, labels, size of the whole split)``.
    """
    samples = _scan_image_folder(str(split_dir.resolve()))
    n_total = len(samples)
    if indices is None:
        return np.empty((0, 32, 32, 3), np.uint8), np.empty(0, np.int64), n_total
    labels = np.asarray([samples[i][1] for i in indices], dtype=np.int64)
    key = hashlib.sha1()
    key.update(str(split_dir.resolve()).encode())
    key.update(str(n_total).encode())
    key.update(np.ascontiguousarray(indices, dtype=np.int64).tobytes())
    cache = cache_root() / "decoded" / f"cifar10-jpeg-{split_dir.name}-{len(indices)}-{key.hexdigest()[:16]}.npy"
    if cache.is_file():
        try:
            pixels = np.load(cache)
            if pixels.shape == (len(indices), 32, 32, 3):
                return pixels, labels, n_total
        except (OSError, ValueError):
            pass  # a torn or foreign file: decode again and overwrite it
    pixels = _decode_jpegs([samples[i][0] for i in indices])
    try:
        # Atomic, uniquely named: concurrent evaluator actors never read a partial file.
        atomic_write(cache, lambda fh: np.save(fh, pixels), durable=False, unique=True)
    except OSError:
        pass  # an unwritable cache only costs decoding time
    return pixels, labels, n_total


def _load_cifar10(settings: DataSettings, seed: int) -> DataBundle:
    root = Path(settings.root).expanduser()
    jpeg = root / "cifar10-jpeg"
    if (jpeg / "train").is_dir() and (jpeg / "test").is_dir():
        try:
            _, _, n_train = _jpeg_split(jpeg / "train", None)
            _, _, n_test = _jpeg_split(jpeg / "test", None)
        except FileNotFoundError as exc:  # torchvision: no class folders / no images
            raise _cifar_missing(root, " (cifar10-jpeg has no class folders)") from exc
        if n_train == 0 or n_test == 0:
            raise _cifar_missing(root, " (cifar10-jpeg has empty splits)")
        train_idx, val_idx = _split_indices(n_train, settings, seed)
        test_idx = _test_indices(n_test, settings, seed)
        tr_px, tr_y, _ = _jpeg_split(jpeg / "train", train_idx)
        va_px, va_y, _ = _jpeg_split(jpeg / "train", val_idx)
        te_px, te_y, _ = _jpeg_split(jpeg / "test", test_idx)
    else:
        train_set, test_set = _torchvision_cifar(root, settings.download)
        train_px, train_y = np.asarray(train_set.data), np.asarray(train_set.targets)
        test_px, test_y = np.asarray(test_set.data), np.asarray(test_set.targets)
        train_idx, val_idx = _split_indices(len(train_y), settings, seed)
        test_idx = _test_indices(len(test_y), settings, seed)
        tr_px, tr_y = train_px[train_idx], train_y[train_idx]
        va_px, va_y = train_px[val_idx], train_y[val_idx]
        te_px, te_y = test_px[test_idx], test_y[test_idx]

    def part(pixels: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> ImageTensorDataset:
        images = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))
        return ImageTensorDataset(images=images, labels=torch.from_numpy(labels.astype(np.int64)),
                                  scale=1.0 / 255.0, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                  indices=idx)

    return DataBundle(name="cifar10", train=part(tr_px, tr_y, train_idx),
                      val=part(va_px, va_y, val_idx), test=part(te_px, te_y, test_idx), num_classes=10, input_shape=(3, 32, 32),
                      mean=IMAGENET_MEAN, std=IMAGENET_STD, augmentable=True)


def _torchvision_cifar(root: Path, download: bool):  # -> tuple[CIFAR10, CIFAR10]
    from torchvision.datasets import CIFAR10

    if not (root / "cifar-10-batches-py").is_dir() and not download:
        raise _cifar_missing(root, "; or set data.download: true")
    try:
        return (CIFAR10(str(root), train=True, download=download),
                CIFAR10(str(root), train=False, download=download))
    except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError alike
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _cifar_missing(root, f" (torchvision: {reason})") from exc


def _load_imagefolder(settings: DataSettings, seed: int) -> DataBundle:
    from prunesearch.methods.data_imagefolder import load_imagefolder

    return load_imagefolder(settings, seed)


def _describe_imagefolder(settings: DataSettings) -> tuple[int, tuple[int, int, int]]:
    from prunesearch.methods.data_imagefolder import describe_imagefolder

    return describe_imagefolder(settings)


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", 10, (1, 8, 8), _load_digits,
                          train_size=_DIGITS_IMAGES - _digits_test_size(_DIGITS_IMAGES)),
    "cifar10": DatasetInfo("cifar10", 10, (3, 32, 32), _load_cifar10, train_size=50_000),
    "imagefolder": DatasetInfo("imagefolder", 0, (0, 0, 0), _load_imagefolder,
                               describe=_describe_imagefolder),
}


def dataset_info(name: str | DataSettings) -> DatasetInfo:
    """Facts (classes, input shape) of a dataset, without loading its images.

    Args:
        name: A registered name, or a ``data`` section: then datasets whose facts depend on
            the settings (``imagefolder``: its class folders and ``data.image_size``; a
            ``data.factory``: its first training item) are described too.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the valid names).
        DataNotFoundError: an image folder is missing.
    """
    if isinstance(name, DataSettings):
        settings = name
        if settings.factory is not None:
            from prunesearch.methods.data_imagefolder import describe_factory, load_factory

            classes, shape = describe_factory(settings)
            return DatasetInfo(settings.source, classes, shape, load_factory)  # type: ignore[arg-type]
        info = dataset_info(str(settings.name))
        if info.describe is not None:
            classes, shape = info.describe(settings)
            return dataclasses.replace(info, num_classes=classes, input_shape=shape)
        return info
    return lookup(DATASETS, name, key="data.name", kind="dataset", names=sorted(DATASETS))


def load_dataset(settings: DataSettings, *, seed: int) -> DataBundle:
    """Load the dataset ``settings`` name (or its ``factory``) and split it.

    ``val`` holds ``settings.val_size`` training images chosen by a permutation seeded with
    ``seed``; ``train`` the rest (or a seeded ``train_subset`` of it); ``test`` the test split (or
    a seeded ``test_subset``). Same settings and seed, same splits. Image folders with their own
    ``val/`` use it (see :mod:`prunesearch.methods.data_imagefolder`).

    Raises:
        UnknownNameError: The dataset name is not registered.
        DataNotFoundError: The data root lacks the dataset (the message names the layout).
        ValueError: ``val_size`` is not smaller than the training set.
    """
    if settings.factory is not None:
        from prunesearch.methods.data_imagefolder import load_factory

        return load_factory(settings, seed)
    return dataset_info(str(settings.name)).loader(settings, seed)


def augment_batch(images: torch.Tensor, *, generator: torch.Generator | None = None,
                  padding: int = 4, ops: Sequence[str] = AUGMENTATIONS) -> torch.Tensor:
    """Random crop (zero padding ``padding``) and horizontal flip, per image, on a batch.

    Works on normalised ``(N, C, H, W)`` batches of any (also non-square) size; the padding
    value is 0 in normalised space (the mean colour), a negligible difference from padding raw
    pixels with black. ``ops`` picks the ops (:data:`AUGMENTATIONS`); random draws are made for
    both whatever ``ops`` holds, so the generator advances the same way.
    """
    if "crop" not in ops:
        padding = 0
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    if "flip" not in ops:
        flip = torch.zeros_like(flip)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h))  # (n, h)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w))  # (n, w)
    cols = torch.where(flip.view(n, 1), cols.flip(1), cols)
    batch_idx = torch.arange(n).view(n, 1, 1)
    # Advanced indexing gathers every image's own crop in one call: (n, h, w, C) -> (n, C, h, w).
    out = padded.permute(0, 2, 3, 1)[batch_idx, rows.view(n, h, 1), cols.view(n, 1, w)]
    return out.permute(0, 3, 1, 2).contiguous()
