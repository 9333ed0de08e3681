"""Config sections consumed by ``prunesearch.methods`` (data, model, hardware, evaluator,
finetune).

Frozen, validated dataclasses (see :mod:`prunesearch.search.settings`). They carry no torch
objects, so they pickle cheaply to Ray actors and GPU machines.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from prunesearch.methods.rounds import ROUND_STATISTICS
from prunesearch.search.settings import setting


# Choices are read from the registries when a config is validated (the registries are the only
# lists of their names; importing them here would import torch with the settings).
def image_dataset_names() -> tuple[str, ...]:
    """Names of the image-dataset registry (``methods.data.DATASETS``)."""
    from prunesearch.methods.data import DATASETS

    return tuple(DATASETS)


def _model_names() -> tuple[str, ...]:
    from prunesearch.methods.models import model_names

    return model_names()


def _is_model_name(name: object) -> bool:
    from prunesearch.methods.families import is_model_name

    return isinstance(name, str) and is_model_name(name)


def _runtime_names() -> tuple[str, ...]:
    from prunesearch.methods.cost.runtimes import runtime_names

    return runtime_names()


def _dtype_names() -> tuple[str, ...]:
    from prunesearch.methods.cost.latency import DTYPES

    return tuple(DTYPES)


def _statistic_names() -> tuple[str, ...]:
    from prunesearch.methods.cost.latency import STATISTICS

    return tuple(STATISTICS)


def _calibration_names() -> tuple[str, ...]:
    from prunesearch.methods.cost.table import CALIBRATIONS

    return tuple(CALIBRATIONS)


def _importance_names() -> tuple[str, ...]:
    from prunesearch.methods.pruning.importance import IMPORTANCES

    return tuple(IMPORTANCES)


def _evaluator_kinds() -> tuple[str, ...]:
    from prunesearch.methods.task import TASKS

    return tuple(TASKS)

__all__ = [
    "default_data_root",
    "DataSettings",
    "ModelSettings",
    "HardwareSettings",
    "EvaluatorSettings",
    "DISTILL_MODES",
    "FinetuneSettings",
]


def default_data_root() -> str:
    """``PRUNESEARCH_DATA`` if set, else ``~/.cache/prunesearch/data``."""
    env = os.environ.get("PRUNESEARCH_DATA")
    if env:
        return str(Path(env).expanduser().resolve())
    return str(Path("~/.cache/prunesearch/data").expanduser())


def _augmentation_names() -> tuple[str, ...]:
    from prunesearch.methods.data import AUGMENTATIONS

    return tuple(AUGMENTATIONS)


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """The ``data`` section.

    ``name`` (a registered dataset, ``imagefolder`` for ``path``'s class folders) and
    ``factory`` (``"package.module:function"`` returning the splits) are alternatives: set one,
    leave the other null (``name`` defaults to ``digits``).
    """

    # Which registry a name comes from depends on the method (image datasets for searches,
    # CLAD and HALP; graph datasets, any TU folder by name, for ICPG): the job config checks
    # it against the method's registry (cluster/config.py, JobConfig.__post_init__).
    name: str | None = setting(None, help="dataset name from the method's dataset registry "
                               "(default digits)")
    root: str = setting(default_factory=default_data_root,
                        help="data root (default: $PRUNESEARCH_DATA or ~/.cache/prunesearch/data)")
    val_size: int = setting(
        300, min=1, help="images carved from the training set for validation (search decisions)"
    )
    train_subset: int | None = setting(
        None, min=1, help="use only this many training images (null: all); seeded choice"
    )
    test_subset: int | None = setting(None, min=1, help="use only this many test images")
    download: bool = setting(False, help="try the library's downloader when data is missing")
    path: str | None = setting(
        None, help="imagefolder: folder holding train/<class>/* (and val/, test/); absolute or "
                   "relative to data.root"
    )
    image_size: tuple[int, ...] | int | None = setting(
        None, min=1, help="imagefolder: [H, W] (or one int) images are resized to; null: the "
                          "images' own (equal) size"
    )
    mean: tuple[float, ...] | None = setting(
        None, help="imagefolder: per-channel mean of pixels in [0, 1] (null: ImageNet's)")
    std: tuple[float, ...] | None = setting(
        None, help="imagefolder: per-channel std of pixels in [0, 1] (null: ImageNet's)")
    augmentation: tuple[str, ...] = setting(
        ("crop", "flip"), choices=_augmentation_names,
        help="fine-tuning augmentation ops (evaluator.augmentation switches them all off)")
    crop_padding: int = setting(4, min=0, help="random-crop padding in pixels")
    channels: int | None = setting(
        None, help="imagefolder: 1 (grayscale) or 3 (RGB): every image is converted to it (a "
                   "grayscale folder for a 3-channel network); null: the first image's")
    factory: str | None = setting(
        None, help="'package.module:function' returning (train, val, test) datasets; "
                   "data.name must then be null"
    )

    def __post_init__(self) -> None:
        if self.factory is not None and self.name is not None:
            raise ValueError(f"data.name {self.name!r} and data.factory {self.factory!r} are "
                             "alternatives: set one and leave the other null")
        if self.factory is None and self.name is None:
            object.__setattr__(self, "name", "digits")
        if isinstance(self.image_size, int):
            object.__setattr__(self, "image_size", (self.image_size,))
        if self.image_size is not None:
            if any(v < 1 for v in self.image_size):
                raise ValueError(f"data.image_size values must be >= 1, got "
                                 f"{list(self.image_size)}")
            if len(self.image_size) == 1:
                object.__setattr__(self, "image_size", (self.image_size[0],) * 2)
            elif len(self.image_size) != 2:
                raise ValueError(f"data.image_size must be [H, W] or one int, got "
                                 f"{list(self.image_size)}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("data.mean and data.std go together: set both or neither")
        if self.std is not None and any(v <= 0 for v in self.std):
            raise ValueError(f"data.std values must be > 0, got {list(self.std)}")
        if self.channels is not None and self.channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 (grayscale), 3 (RGB) or null, got "
                             f"{self.channels}")
        if self.name == "imagefolder" and not self.path:
            raise ValueError("data.name 'imagefolder' needs data.path (a folder with "
                             "train/<class>/* images)")

    @property
    def source(self) -> str:
        """What the data comes from: the dataset name, or ``factory:<path>``."""
        return self.name if self.name is not None else f"factory:{self.factory}"


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The ``model`` section.

    ``name`` (a registry model or ``torchvision:NAME``) and ``factory``
    (``"package.module:function"`` called with ``num_classes=``, returning an ``nn.Module``) are
    alternatives: set one, leave the other null (``name`` defaults to ``digits-cnn``).
    """

    name: str | None = setting(None, choices=_model_names, member=_is_model_name,
                               help="model name from the model-family registry, or "
                                    "torchvision:NAME (default digits-cnn)")
    checkpoint: str | None = setting(
        None, help="path to base weights; default: pretrained file under data.root, or train once"
    )
    pretrain_epochs: int = setting(
        20, min=0, help="epochs to train the base model when no checkpoint/pretrained file exists"
    )
    factory: str | None = setting(
        None, help="'package.module:function' building the network (called with num_classes=); "
                   "model.name must then be null"
    )
    classifier: str | None = setting(
        None, help="module name of the classifier (default: found from the forward pass)")
    ignore: tuple[str, ...] = setting(
        (), help="module names whose output channels are never pruned (containers: all inside)")

    def __post_init__(self) -> None:
        if self.factory is not None and self.name is not None:
            raise ValueError(f"model.name {self.name!r} and model.factory {self.factory!r} are "
                             "alternatives: set one and leave the other null")
        if self.factory is None and self.name is None:
            object.__setattr__(self, "name", "digits-cnn")

    @property
    def source(self) -> str:
        """The model's identity: its registry name, or ``factory:<path>``."""
        return self.name if self.name is not None else f"factory:{self.factory}"


@dataclasses.dataclass(frozen=True)
class HardwareSettings:
    """The ``hardware`` section: the deployment target whose latency is optimised."""

    device: str = setting("cpu", help="torch device string: cpu, cuda, cuda:1")
    runtime: str = setting("eager", choices=_runtime_names,
                           help="inference runtime latency is measured in")
    dtype: str = setting("float32", choices=_dtype_names)
    batch_size: int = setting(1, min=1, help="deployment batch size for latency and memory")
    threads: int = setting(1, min=1, help="torch intra-op threads for timing and evaluation")
    granularity: int = setting(4, min=1, help="channel granule size (widths are multiples)")
    warmup: int = setting(10, min=0, help="untimed runs before timing")
    repeats: int = setting(100, min=3, help="timed runs; median and p90 reported")
    calibration_genomes: int = setting(
        8, min=0, help="random genomes timed end to end to calibrate the latency table"
    )
    calibration: str = setting(
        "robust", choices=_calibration_names,
        help="latency-table calibration: measured = scale * table_sum + offset fitted by "
             "Theil-Sen (robust: one network timed in a slow spell does not tilt it) or least "
             "squares (linear), scale only, or none"
    )
    table_warmup: int = setting(3, min=0, help="untimed runs per latency-table layer entry")
    table_repeats: int = setting(
        20, min=3, help="timed runs per latency-table layer entry (see latency_statistic)"
    )
    latency_statistic: str = setting(
        "p25", choices=_statistic_names,
        help="statistic of a table entry's timed runs that is the entry: a low percentile "
             "ignores runs slowed by other work on the machine (docs/METHODS.md)"
    )
    calibration_rounds: int = setting(
        3, min=1, help="rounds the calibration networks are timed in, interleaved with the "
                       "table entries, and passes of the end-of-run re-timing (a figure is "
                       "the rounds_statistic of its rounds)"
    )
    rounds_statistic: str = setting(
        "min", choices=ROUND_STATISTICS,
        help="how a figure combines its rounds (calibration networks, end-of-run re-timing): "
             "min (default) keeps the fastest round and also times every table entry once "
             "per round, keeping its fastest, so table and timings agree on a machine whose "
             "speed changes in spells; median times each entry once (docs/METHODS.md)"
    )
    keep_freed_memory: bool = setting(
        True, help="in processes that time latency, keep freed memory in the C allocator "
                    "(glibc mallopt: no trimming, no per-allocation mmap) so activations do not "
                    "page-fault afresh every forward; on CPUs this makes layer sums additive "
                    "(docs/METHODS.md). Linux/glibc only; ignored elsewhere"
    )
    cache_tolerance: float = setting(
        0.10, min=0.0,
        help="a cached latency table whose calibration predicts the fresh calibration "
             "networks off by more than this (median relative) is timed again"
    )


@dataclasses.dataclass(frozen=True)
class EvaluatorSettings:
    """The ``evaluator`` section: how one candidate is recovered and scored."""

    kind: str = setting("finetune", choices=_evaluator_kinds,
                        help="finetune: real pruning + training; synthetic: the cheap test problem")
    finetune_steps: int = setting(50, min=0, help="SGD steps of fine-tuning per candidate")
    lr: float = setting(0.01, min=0.0, help="fine-tuning learning rate")
    momentum: float = setting(0.9, min=0.0, max=1.0)
    weight_decay: float = setting(5e-4, min=0.0)
    batch_size: int = setting(64, min=1, help="fine-tuning batch size")
    augmentation: bool = setting(True, help="random crop + flip during fine-tuning (images >= 32px)")
    importance: str = setting("l1", choices=_importance_names,
                              help="channel ranking criterion inside each group")
    bn_recalibration_batches: int = setting(
        10, min=0, help="training batches used to re-estimate BN statistics after pruning"
    )
    val_batches: int | None = setting(None, min=1, help="limit validation batches (null: all)")
    finetune_fn: str | None = setting(
        None, help="'package.module:function' replacing the fine-tune: fn(model, data, *, "
                   "steps, settings, generator, device) -> loss or None"
    )
    score_fn: str | None = setting(
        None, help="'package.module:function' replacing top-1 accuracy: fn(model, data, *, "
                   "settings, device) -> float (on data.val)"
    )
    score_name: str = setting("val_acc", help="name of the score in journals and pareto.csv")
    score_direction: str = setting(
        "maximize", choices=("maximize", "minimize"),
        help="maximize: the search minimises 1 - score (scores in [0, 1]); minimize: the score"
    )
    synthetic_sleep_s: float = setting(
        0.0, min=0.0, help="synthetic evaluator only: seconds each evaluation sleeps"
    )
    synthetic_jitter: float = setting(
        0.0, min=0.0, max=1.0, help="synthetic evaluator only: relative seeded jitter of the sleep"
    )
    synthetic_duration: str = setting(
        "fixed", choices=("fixed", "macs"),
        help="synthetic evaluator only: fixed: sleep synthetic_sleep_s (+- jitter); macs: sleep "
             "synthetic_sleep_s x the candidate's MACs / the dense model's (+- jitter)")

    def __post_init__(self) -> None:
        if self.kind == "synthetic" and self.synthetic_sleep_s < 0:
            raise ValueError("synthetic_sleep_s must be >= 0")


DISTILL_MODES = ("none", "kd", "attention")


@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
    """The ``finetune`` section: the final fine-tune of picked networks."""

    epochs: int = setting(30, min=1, help="epochs over the training split")
    lr: float = setting(0.01, min=0.0, help="initial learning rate (cosine-decayed to 0)")
    momentum: float = setting(0.9, min=0.0, max=1.0)
    weight_decay: float = setting(5e-4, min=0.0, help="on conv/linear weights (not BN, biases)")
    batch_size: int = setting(128, min=1)
    augmentation: bool = setting(True, help="random crop + flip (images >= 32 px only)")
    distill: str = setting("none", choices=DISTILL_MODES,
                           help="none, kd (logits) or attention (attention transfer + kd)")
    temperature: float = setting(4.0, min=0.01, help="KD temperature")
    kd_weight: float = setting(0.5, min=0.0, max=1.0, help="share of the KD term vs CE")
    attention_weight: float = setting(100.0, min=0.0, help="weight of the attention loss")
    train_subset: int | None = setting(
        None, min=1, help="fine-tune on this many training images (seeded choice; null: all)")
