"""Torchvision models (ResNet-18/50, MobileNetV2), pruned along Torch-Pruning's dependency graph.

Every group Torch-Pruning finds (the classifier's outputs excluded) is one gene; layer specs come
from tracing a pruned copy with ``torch.fx`` (slow, memoised per width vector), so the cost model
is the per-genome one. These networks take any image size: the dataset's shape is passed in
(there is no default).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from prunesearch.methods.families import ModelFamily

__all__ = ["TorchvisionFamily"]


def _builder(name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import torchvision

        # weights=None: random init, never a download (the machines may be offline).
        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)

    return build


class TorchvisionFamily(ModelFamily):
    """``resnet18``, ``resnet50``, ``mobilenet_v2`` (random init) on images of any size."""

    name = "torchvision"
    models = {n: _builder(n) for n in ("resnet18", "resnet50", "mobilenet_v2")}
    exact_cost = False

    def owns(self, model: Any) -> bool:
        return type(model).__module__.startswith("torchvision.")

    def check_input(self, model_name: str, input_shape: Sequence[int]) -> None:
        if input_shape[0] != 3:
            raise ValueError(f"model '{model_name}' needs 3-channel images; got "
                             f"{input_shape[0]} channels")

    def groups(self, model: nn.Module, input_shape: tuple[int, int, int]
               ) -> list[tuple[str, int, str]]:
        from prunesearch.methods.pruning.tp_groups import tp_groups

        return [(name, width, "tp-group")
                for name, width in tp_groups(model, input_shape=input_shape)]

    def producers(self, model: nn.Module, input_shape: tuple[int, int, int]
                  ) -> dict[str, list[Any]]:
        from prunesearch.methods.pruning.tp_groups import tp_producers

        return tp_producers(model, input_shape=input_shape)

    def prune(self, model: nn.Module, kept: Mapping[str, Sequence[int]],
              input_shape: tuple[int, int, int]) -> nn.Module:
        from prunesearch.methods.pruning.tp_groups import tp_prune

        return tp_prune(model, kept, input_shape=input_shape)

    def layer_specs(self, space: Any, channels: tuple[int, ...], batch: int,
                    hw: tuple[int, int]) -> Sequence[Any]:
        from prunesearch.methods.pruning.specs import traced_specs

        return traced_specs(space, channels, batch, hw)

    def arch_config(self, model: nn.Module, model_name: str) -> dict[str, Any]:
        from prunesearch.methods.models import _classifier

        return {"family": self.name, "name": model_name,
                "num_classes": int(_classifier(model).out_features)}

    def build_from_arch(self, arch: Mapping[str, Any]) -> nn.Module:
        return self.models[arch["name"]](arch["num_classes"])
