"""Models by name, and the base model a search prunes.

:data:`MODELS` maps names to their entries, read from the model families
(:mod:`prunesearch.methods.families`, the only list of them): ``digits-cnn``; the CIFAR ResNets
``resnet20``, ``resnet32``, ``resnet44``, ``resnet56``, ``resnet110`` (option-A shortcuts,
akamaster parameter names); torchvision's ``resnet18``, ``resnet50`` and ``mobilenet_v2``
(random init, no download).

:func:`load_base_model` resolves the weights, in this order: ``model.checkpoint`` if set; the
pretrained CIFAR-10 file ``data.root/weights/cifar10-resnet/resnetNN-*.th`` for ResNet-20/32/44/56
on CIFAR-10; else the model is trained once (``model.pretrain_epochs``) and cached under
``<cache>/models/`` keyed on model, dataset, data splits, seed and epochs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunesearch.methods.data import dataset_info, load_dataset
from prunesearch.methods.errors import DataNotFoundError, lookup
from prunesearch.methods.io import atomic_write, cache_root
from prunesearch.methods.models.cifar_resnet import CifarResNet
from prunesearch.methods.models.digits_cnn import DigitsCNN
from prunesearch.methods.models.training import accuracy, train_base_model
from prunesearch.methods.settings import DataSettings, ModelSettings

__all__ = [
    "MODELS",
    "CifarResNet",
    "DigitsCNN",
    "ModelInfo",
    "accuracy",
    "arch_config",
    "build_base",
    "build_from_arch",
    "build_model",
    "load_base_model",
    "load_state_dict_file",
    "model_info",
    "model_names",
    "pretrained_path",
    "train_base_model",
]


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """A registered model: its family and constructor ``build(num_classes) -> nn.Module``."""

    name: str
    family: str
    build: Callable[[int], nn.Module]
    pretrained_cifar10: bool = False


class _ModelRegistry(Mapping[str, ModelInfo]):
    """Read-only view of every family's models (families registered later show up too)."""

    def _entries(self) -> dict[str, ModelInfo]:
        from prunesearch.methods.families import FAMILIES

        return {name: ModelInfo(name, family.name, build, name in family.pretrained_cifar10)
                for family in FAMILIES.values() for name, build in family.models.items()}

    def __getitem__(self, name: str) -> ModelInfo:
        return self._entries()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries())

    def __len__(self) -> int:
        return len(self._entries())


#: Model name -> :class:`ModelInfo`, for every model of every registered family.
MODELS: Mapping[str, ModelInfo] = _ModelRegistry()


def model_names() -> tuple[str, ...]:
    """Every registered model name (the config's ``model.name`` choices)."""
    from prunesearch.methods.families import model_names as names

    return names()


def model_info(name: str) -> ModelInfo:
    """The registry entry for ``name``.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the valid names).
    """
    return lookup(MODELS, name, key="model.name", kind="model")


def build_model(name: str, num_classes: int = 10) -> nn.Module:
    """A freshly initialised (random) model by registry name."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return model_info(name).build(num_classes)


def arch_config(model: nn.Module, name: str) -> dict[str, Any]:
    """JSON-able description from which :func:`build_from_arch` rebuilds ``model``'s shapes."""
    from prunesearch.methods.families import family_of

    return family_of(model).arch_config(model, name)


def build_from_arch(arch: Mapping[str, Any]) -> nn.Module:
    """Build an (uninitialised-weights) model from :func:`arch_config`'s description."""
    from prunesearch.methods.errors import UnknownNameError
    from prunesearch.methods.families import family_entry

    try:
        family = family_entry(str(arch.get("family")))
    except UnknownNameError:
        raise ValueError(f"unknown architecture family {arch.get('family')!r}") from None
    return family.build_from_arch(arch)


def _classifier(model: nn.Module) -> nn.Linear:
    """The final classifier layer of a registered model."""
    for attr in ("linear", "fc"):
        if isinstance(getattr(model, attr, None), nn.Linear):
            return getattr(model, attr)
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Sequential) and isinstance(classifier[-1], nn.Linear):
        return classifier[-1]
    raise ValueError(f"cannot find the classifier of {type(model).__name__}")


def pretrained_path(name: str, data_root: str | os.PathLike[str]) -> Path | None:
    """The pretrained CIFAR-10 weight file ``resnetNN-*.th`` under ``data_root``, if present."""
    folder = Path(data_root).expanduser() / "weights" / "cifar10-resnet"
    found = sorted(folder.glob(f"{name}-*.th")) if folder.is_dir() else []
    return found[0] if found else None


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict saved as a plain dict, ``{'state_dict': ...}`` (akamaster) or
    ``{'model': ...}``; a ``module.`` prefix (DataParallel) is stripped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"checkpoint '{path}' does not exist")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise TypeError(f"checkpoint '{path}' holds no state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _cache_key(model_settings: ModelSettings, data_settings: DataSettings, seed: int) -> str:
    desc = {"model": model_settings.name, "data": data_settings.name,
            "val_size": data_settings.val_size, "train_subset": data_settings.train_subset,
            "seed": seed, "epochs": model_settings.pretrain_epochs, "torch": torch.__version__}
    if model_settings.factory or data_settings.factory or data_settings.path:
        # A user's network or data: its identity is its import path / folder and image size.
        desc.update(model_source=model_settings.source, data_source=data_settings.source,
                    path=data_settings.path, image_size=data_settings.image_size,
                    mean=data_settings.mean, std=data_settings.std)
    digest = hashlib.sha1(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in
                   f"{model_settings.source}-{data_settings.source}")[:80]
    return f"{stem}-seed{seed}-e{model_settings.pretrain_epochs}-{digest}.pt"


def build_base(model_settings: ModelSettings, num_classes: int) -> nn.Module:
    """The (random-init) network a ``model`` section names, with ``num_classes`` outputs.

    ``model.name`` builds from the registry (``torchvision:NAME`` included); ``model.factory``
    imports ``package.module:function`` and calls it with ``num_classes=``. Networks pruned
    along the dependency graph get ``model.classifier`` and ``model.ignore`` attached.

    Raises:
        ConfigError: the factory cannot be imported or does not return an ``nn.Module``, or
            ``model.classifier``/``model.ignore`` are set for a family with its own surgery.
        ModelTraceError: ``model.classifier``/``model.ignore`` name no module of the network.
    """
    from prunesearch.methods.errors import ConfigError
    from prunesearch.methods.families import family_of
    from prunesearch.methods.families.graph import (
        DependencyGraphFamily,
        build_source,
        tag_model,
    )

    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    source = model_settings.source
    if model_settings.factory is not None:
        model = build_source(source, num_classes)
    else:
        model = model_info(source).build(num_classes)
    if isinstance(family_of(model), DependencyGraphFamily):
        return tag_model(model, source, num_classes=num_classes,
                         classifier=model_settings.classifier, ignore=model_settings.ignore)
    if model_settings.classifier or model_settings.ignore:
        raise ConfigError(f"model.classifier and model.ignore apply to networks pruned along "
                          f"the dependency graph, not to '{source}' (its own surgery)")
    return model


def _load_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> None:
    from prunesearch.methods.errors import ConfigError

    try:
        model.load_state_dict(load_state_dict_file(path))
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or str(exc).splitlines()[:1]
        raise ConfigError(f"model.checkpoint '{path}' does not fit the network "
                          f"({' '.join(first).strip()[:200]})") from None


def load_base_model(model_settings: ModelSettings, data_settings: DataSettings, *,
                    seed: int = 0,
                    train_fn: Callable[..., nn.Module] | None = None) -> nn.Module:
    """The trained, unpruned model a search starts from (in eval mode, on CPU).

    Args:
        model_settings: ``model`` section (name, checkpoint, pretrain_epochs).
        data_settings: ``data`` section (dataset name and root; also the training data when the
            model must be trained).
        seed: Seed of data splits and training when the model is trained here.
        train_fn: ``train_fn(model, bundle, epochs=..., seed=...)`` used instead of
            :func:`train_base_model` when training is needed.

    Raises:
        UnknownNameError: Unknown model or dataset name.
        DataNotFoundError: ``model.checkpoint`` is missing, or the pretrained file of a
            ResNet-20/32/44/56 is not under ``data.root`` (the message names the path expected).
    """
    from prunesearch.methods.families import family_of
    from prunesearch.methods.objects import is_object

    data = dataset_info(data_settings)
    info = model_info(model_settings.name) if model_settings.factory is None else None
    model = build_base(model_settings, data.num_classes)
    try:
        family_of(model).check_input(model_settings.source, data.input_shape)
    except ValueError as exc:
        raise ValueError(f"{exc} (dataset '{data.name}')") from None
    if model_settings.checkpoint:
        _load_checkpoint(model, model_settings.checkpoint)
        return model.eval()
    if is_object(model_settings.name):
        return model.eval()  # a network given to the Python API comes with its own weights
    if info is not None and info.pretrained_cifar10 and data.name == "cifar10":
        path = pretrained_path(info.name, data_settings.root)
        if path is None:
            folder = Path(data_settings.root).expanduser() / "weights" / "cifar10-resnet"
            raise DataNotFoundError(
                f"data.root '{data_settings.root}' has no pretrained {info.name}: expected "
                f"{folder}/{info.name}-*.th (akamaster format), or set model.checkpoint")
        model.load_state_dict(load_state_dict_file(path))
        return model.eval()
    if model_settings.pretrain_epochs == 0:
        return model.eval()
    cache = cache_root() / "models" / _cache_key(model_settings, data_settings, seed)
    if cache.is_file():
        try:
            model.load_state_dict(torch.load(cache, map_location="cpu", weights_only=True))
            return model.eval()
        except (OSError, RuntimeError, ValueError):
            pass  # torn or incompatible cache entry: retrain and overwrite
    bundle = load_dataset(data_settings, seed=seed)
    torch.manual_seed(seed)
    model = build_base(model_settings, data.num_classes)  # same init for the same seed
    trainer = train_fn or train_base_model
    model = trainer(model, bundle, epochs=model_settings.pretrain_epochs, seed=seed)
    try:
        # Atomic, uniquely named: parallel actors never read a half-written file.
        atomic_write(cache, lambda fh: torch.save(model.state_dict(), fh), durable=False,
                     unique=True)
    except OSError:
        pass
    return model.eval()
