"""The digits CNN family: three conv-BN-ReLU layers (max-pool after the second), one gene per
conv, pruned by our own surgery (a smaller ``DigitsCNN`` with sliced weights)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from prunesearch.methods.cost.specs import LayerSpec
from prunesearch.methods.families import ModelFamily
from prunesearch.methods.models.digits_cnn import DigitsCNN
from prunesearch.methods.pruning.space import check_kept
from prunesearch.methods.pruning.specs import SpecBuilder
from prunesearch.methods.pruning.surgery import copy_bn, copy_conv, copy_linear, like

__all__ = ["DigitsCNNFamily"]


class DigitsCNNFamily(ModelFamily):
    """``digits-cnn`` on 1-channel images (scikit-learn's 8x8 digits by default)."""

    name = "digits-cnn"
    models = {"digits-cnn": lambda num_classes: DigitsCNN(num_classes=num_classes)}
    default_input_shape = (1, 8, 8)

    def owns(self, model: Any) -> bool:
        return isinstance(model, DigitsCNN)

    def check_input(self, model_name: str, input_shape: Sequence[int]) -> None:
        if input_shape[0] != 1:
            raise ValueError(f"model '{model_name}' needs 1-channel images; got "
                             f"{input_shape[0]} channels")

    def groups(self, model: DigitsCNN, input_shape: tuple[int, int, int]
               ) -> list[tuple[str, int, str]]:
        return [(f"conv{i + 1}", w, "conv") for i, w in enumerate(model.widths)]

    def producers(self, model: DigitsCNN, input_shape: tuple[int, int, int]
                  ) -> dict[str, list[Any]]:
        return {f"conv{i}": [(getattr(model, f"conv{i}"), None), (getattr(model, f"bn{i}"), None)]
                for i in (1, 2, 3)}

    def prune(self, model: DigitsCNN, kept: Mapping[str, Sequence[int]],
              input_shape: tuple[int, int, int]) -> nn.Module:
        check_kept(kept, {name: width for name, width, _ in self.groups(model, input_shape)})
        k = [list(kept[f"conv{i}"]) for i in (1, 2, 3)]
        new = like(DigitsCNN(widths=[len(x) for x in k], num_classes=model.num_classes,
                             in_channels=model.in_channels), model)
        previous: list[int] | None = None
        for i in (1, 2, 3):
            copy_conv(getattr(new, f"conv{i}"), getattr(model, f"conv{i}"), k[i - 1], previous)
            copy_bn(getattr(new, f"bn{i}"), getattr(model, f"bn{i}"), k[i - 1])
            previous = k[i - 1]
        copy_linear(new.fc, model.fc, k[2])
        return new.train(model.training)

    def layer_specs(self, space: Any, channels: tuple[int, ...], batch: int,
                    hw: tuple[int, int]) -> list[LayerSpec]:
        b = SpecBuilder(batch)
        cin = space.input_shape[0]
        for i, cout in enumerate(channels):
            hw = b.conv(cin, cout, hw, 3, 1, 1)
            b.same("bn", cout, hw)
            b.same("relu", cout, hw)
            if i == 1:
                out = (hw[0] // 2, hw[1] // 2)
                b.ops.append(LayerSpec("maxpool", batch, cout, cout, hw, out, 2, 2))
                hw = out
            cin = cout
        b.head(cin, hw, space.num_classes)
        return b.ops

    def build_from_arch(self, arch: Mapping[str, Any]) -> nn.Module:
        return DigitsCNN(widths=arch["widths"], num_classes=arch["num_classes"],
                         in_channels=arch.get("in_channels", 1))
