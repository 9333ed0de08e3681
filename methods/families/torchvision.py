"""Torchvision classifiers, pruned along Torch-Pruning's dependency graph.

``resnet18``, ``resnet50`` and ``mobilenet_v2`` keep their short registry names; every
classification model of ``torchvision.models`` is also available as ``torchvision:NAME``
(``torchvision:densenet121``, ``torchvision:convnext_tiny``, ...). Weights are never
downloaded: models are built with ``weights=None`` and get their weights from
``model.checkpoint`` (a state dict) or are trained for ``model.pretrain_epochs``. GoogLeNet and
Inception-v3 are built without their auxiliary classifiers (they run only in training mode, so a
graph traced in eval mode cannot keep their inputs consistent). These networks take any image
size: the dataset's shape is passed in (there is no default).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from prunesearch.methods.families.graph import DependencyGraphFamily, LazyModels, tag_model

__all__ = ["PREFIX", "TorchvisionFamily", "torchvision_classifiers"]

PREFIX = "torchvision:"
_LEGACY = ("resnet18", "resnet50", "mobilenet_v2")
# Built without auxiliary heads (see the module docstring); init_weights silences the warning.
_EXTRA_KWARGS = {"googlenet": {"aux_logits": False, "init_weights": True},
                 "inception_v3": {"aux_logits": False, "init_weights": True}}


@functools.lru_cache(maxsize=1)
def torchvision_classifiers() -> tuple[str, ...]:
    """Names of torchvision's classification models (``torchvision.models`` proper)."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def _names() -> tuple[str, ...]:
    return _LEGACY + tuple(PREFIX + n for n in torchvision_classifiers())


def _builder(name: str) -> Callable[[int], nn.Module]:
    arch = name.removeprefix(PREFIX)

    def build(num_classes: int) -> nn.Module:
        import torchvision

        # weights=None: random init, never a download (the machines may be offline).
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes,
                                             **_EXTRA_KWARGS.get(arch, {}))
        return tag_model(model, name, num_classes=num_classes)

    return build


class TorchvisionFamily(DependencyGraphFamily):
    """Torchvision classifiers (random init) on images of any size."""

    name = "torchvision"
    models = LazyModels(_names, _builder, prefix=PREFIX, fixed=_LEGACY)

    def owns(self, model: Any) -> bool:
        return type(model).__module__.startswith("torchvision.")

    def check_input(self, model_name: str, input_shape: Sequence[int]) -> None:
        if input_shape[0] != 3:
            raise ValueError(f"model '{model_name}' needs 3-channel images; got "
                             f"{input_shape[0]} channels (an image folder converts them with "
                             "data.channels: 3)")
