"""Models by name, and the base model a search prunes.

:data:`MODELS` maps names to constructors: ``digits-cnn``; the CIFAR ResNets ``resnet20``,
``resnet32``, ``resnet44``, ``resnet56``, ``resnet110`` (option-A shortcuts, akamaster parameter
names); ``digits-resnet14`` (the same ResNet for 1-channel 8x8 digits); torchvision's
``resnet18``, ``resnet50`` and ``mobilenet_v2`` (random init, no download).

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
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunesearch.methods.data import cache_root, dataset_info, load_dataset
from prunesearch.methods.errors import DataNotFoundError, lookup
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
    "build_from_arch",
    "build_model",
    "load_base_model",
    "load_state_dict_file",
    "pretrained_path",
    "train_base_model",
]


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """A registered model: its family and constructor ``build(num_classes) -> nn.Module``."""

    name: str
    family: str  # 'digits-cnn' | 'cifar-resnet' | 'torchvision'
    build: Callable[[int], nn.Module]
    pretrained_cifar10: bool = False


def _torchvision(name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import torchvision

        # weights=None: random init, never a download (the machines may be offline).
        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)

    return build


def _cifar(depth: int) -> Callable[[int], nn.Module]:
    return lambda num_classes: CifarResNet(depth, num_classes=num_classes)


MODELS: dict[str, ModelInfo] = {
    "digits-cnn": ModelInfo("digits-cnn", "digits-cnn",
                            lambda num_classes: DigitsCNN(num_classes=num_classes)),
    **{f"resnet{d}": ModelInfo(f"resnet{d}", "cifar-resnet", _cifar(d), d != 110)
       for d in (20, 32, 44, 56, 110)},
    **{n: ModelInfo(n, "torchvision", _torchvision(n)) for n in ("resnet18", "resnet50",
                                                                 "mobilenet_v2")},
    # The quickstart's model: a CIFAR-style ResNet-14 (widths 16/32/64) on the 8x8 digits,
    # 6 block + 3 stage widths = 9 prunable groups through the CIFAR-ResNet pruning path.
    "digits-resnet14": ModelInfo("digits-resnet14", "cifar-resnet", lambda num_classes:
                                 CifarResNet(14, num_classes=num_classes, in_channels=1,
                                             input_size=8)),
}


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
    if hasattr(model, "arch_config"):
        return model.arch_config()
    num_classes = _classifier(model).out_features
    return {"family": "torchvision", "name": name, "num_classes": int(num_classes)}


def build_from_arch(arch: Mapping[str, Any]) -> nn.Module:
    """Build an (uninitialised-weights) model from :func:`arch_config`'s description."""
    family = arch.get("family")
    if family == "cifar-resnet":
        return CifarResNet(arch["depth"], num_classes=arch["num_classes"],
                           stage_widths=arch["stage_widths"], block_widths=arch["block_widths"],
                           shortcut_indices=arch["shortcut_indices"],
                           in_channels=arch.get("in_channels", 3),
                           input_size=arch.get("input_size", 32))
    if family == "digits-cnn":
        return DigitsCNN(widths=arch["widths"], num_classes=arch["num_classes"],
                         in_channels=arch.get("in_channels", 1))
    if family == "torchvision":
        return build_model(arch["name"], arch["num_classes"])
    raise ValueError(f"unknown architecture family {family!r}")


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
    digest = hashlib.sha1(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:12]
    return (f"{model_settings.name}-{data_settings.name}-seed{seed}"
            f"-e{model_settings.pretrain_epochs}-{digest}.pt")


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
    info = model_info(model_settings.name)
    data = dataset_info(data_settings.name)
    model = info.build(data.num_classes)
    if info.family == "cifar-resnet" and data.input_shape[0] != model.in_channels:
        raise ValueError(f"model '{info.name}' needs {model.in_channels}-channel images; "
                         f"dataset '{data.name}' has {data.input_shape[0]}")
    if info.family == "digits-cnn" and data.input_shape[0] != 1:
        raise ValueError(f"model 'digits-cnn' needs 1-channel images; dataset '{data.name}' has "
                         f"{data.input_shape[0]}")
    if model_settings.checkpoint:
        model.load_state_dict(load_state_dict_file(model_settings.checkpoint))
        return model.eval()
    if info.pretrained_cifar10 and data.name == "cifar10":
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
    model = info.build(data.num_classes)  # same init for the same seed
    trainer = train_fn or train_base_model
    model = trainer(model, bundle, epochs=model_settings.pretrain_epochs, seed=seed)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            torch.save(model.state_dict(), fh)
        os.replace(tmp, cache)  # atomic: parallel actors never read a half-written file
    except OSError:
        pass
    return model.eval()
