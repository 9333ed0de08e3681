"""The CIFAR ResNet family (ResNet-20/32/44/56/110, option-A shortcuts).

Dependency tracers cannot follow the parameter-free option-A shortcut, so these networks are
pruned by our own surgery. Genes: the inner width of every block (``layer1.0`` ...
``layer3.{n-1}``), then the residual width of every stage (``stage1``..``stage3``; the stem conv
belongs to stage 1): 30 genes for ResNet-56.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from prunesearch.methods.cost.specs import LayerSpec
from prunesearch.methods.families import ModelFamily
from prunesearch.methods.models.cifar_resnet import CifarResNet
from prunesearch.methods.pruning.space import check_kept
from prunesearch.methods.pruning.specs import SpecBuilder
from prunesearch.methods.pruning.surgery import (
    cifar_shortcut_index,
    copy_bn,
    copy_conv,
    copy_linear,
    like,
)

__all__ = ["CifarResNetFamily"]

_DEPTHS = (20, 32, 44, 56, 110)


def _builder(depth: int) -> Any:
    return lambda num_classes: CifarResNet(depth, num_classes=num_classes)


class CifarResNetFamily(ModelFamily):
    """``resnet20`` .. ``resnet110`` on 3-channel images (32x32 by default)."""

    name = "cifar-resnet"
    models = {
        **{f"resnet{d}": _builder(d) for d in _DEPTHS},
        # The quickstart's model: a CIFAR-style ResNet-14 (widths 16/32/64) on the 1-channel
        # 8x8 digits, 6 block + 3 stage widths = 9 prunable groups.
        "digits-resnet14": lambda num_classes: CifarResNet(14, num_classes=num_classes,
                                                           in_channels=1, input_size=8),
    }
    #: Image channels each model expects (3 unless listed).
    channels = {"digits-resnet14": 1}
    # akamaster publishes ResNet-20/32/44/56 (not 110) CIFAR-10 weights.
    pretrained_cifar10 = frozenset(f"resnet{d}" for d in _DEPTHS if d != 110)
    default_input_shape = (3, 32, 32)

    def owns(self, model: Any) -> bool:
        return isinstance(model, CifarResNet)

    def input_shape(self, model: Any, input_shape: Sequence[int] | None = None
                    ) -> tuple[int, int, int]:
        # The network's own image size (32x32 CIFAR, 8x8 digits) when the caller gives none.
        if input_shape is None and isinstance(model, CifarResNet):
            size = int(getattr(model, "input_size", 32))
            return (int(model.in_channels), size, size)
        return super().input_shape(model, input_shape)

    def check_input(self, model_name: str, input_shape: Sequence[int]) -> None:
        expected = self.channels.get(model_name, 3)
        if input_shape[0] != expected:
            raise ValueError(f"model '{model_name}' needs {expected}-channel images; got "
                             f"{input_shape[0]} channels")

    def groups(self, model: CifarResNet, input_shape: tuple[int, int, int]
               ) -> list[tuple[str, int, str]]:
        n = model.blocks_per_stage
        groups = [(f"layer{s + 1}.{i}", model.block_widths[s * n + i], "block")
                  for s in range(3) for i in range(n)]
        return groups + [(f"stage{s + 1}", model.stage_widths[s], "stage") for s in range(3)]

    def producers(self, model: CifarResNet, input_shape: tuple[int, int, int]
                  ) -> dict[str, list[Any]]:
        groups: dict[str, list[Any]] = {}
        for s, stage in enumerate(model.stages()):
            for i, block in enumerate(stage):
                groups[f"layer{s + 1}.{i}"] = [(block.conv1, None), (block.bn1, None)]
        for s, stage in enumerate(model.stages()):
            members: list[Any] = [(model.conv1, None), (model.bn1, None)] if s == 0 else []
            for block in stage:
                members += [(block.conv2, None), (block.bn2, None)]
            groups[f"stage{s + 1}"] = members
        return groups

    def prune(self, model: CifarResNet, kept: Mapping[str, Sequence[int]],
              input_shape: tuple[int, int, int]) -> nn.Module:
        check_kept(kept, {name: width for name, width, _ in self.groups(model, input_shape)})
        n = model.blocks_per_stage
        stage_keep = [list(kept[f"stage{s + 1}"]) for s in range(3)]
        block_keep = [list(kept[f"layer{s + 1}.{i}"]) for s in range(3) for i in range(n)]
        base_stages = model.stages()
        shortcut_indices = [
            cifar_shortcut_index(base_stages[s][0].shortcut.index_list(), stage_keep[s - 1],
                                 stage_keep[s])
            for s in (1, 2)
        ]
        new = like(CifarResNet(model.depth, num_classes=model.num_classes,
                               stage_widths=[len(k) for k in stage_keep],
                               block_widths=[len(k) for k in block_keep],
                               shortcut_indices=shortcut_indices,
                               in_channels=model.in_channels,
                               input_size=getattr(model, "input_size", 32)), model)
        copy_conv(new.conv1, model.conv1, stage_keep[0], None)
        copy_bn(new.bn1, model.bn1, stage_keep[0])
        in_keep = stage_keep[0]
        for s, (new_stage, old_stage) in enumerate(zip(new.stages(), base_stages)):
            for i, (nb, ob) in enumerate(zip(new_stage, old_stage)):
                mid = block_keep[s * n + i]
                copy_conv(nb.conv1, ob.conv1, mid, in_keep)
                copy_bn(nb.bn1, ob.bn1, mid)
                copy_conv(nb.conv2, ob.conv2, stage_keep[s], mid)
                copy_bn(nb.bn2, ob.bn2, stage_keep[s])
                in_keep = stage_keep[s]
        copy_linear(new.linear, model.linear, stage_keep[2])
        return new.train(model.training)

    def layer_specs(self, space: Any, channels: tuple[int, ...], batch: int,
                    hw: tuple[int, int]) -> list[LayerSpec]:
        n = (len(space.groups) - 3) // 3
        inner, stage = list(channels[: 3 * n]), list(channels[3 * n:])
        b = SpecBuilder(batch)
        hw = b.conv(space.input_shape[0], stage[0], hw, 3, 1, 1)
        b.same("bn", stage[0], hw)
        b.same("relu", stage[0], hw)
        cin = stage[0]
        for s in range(3):
            for i in range(n):
                stride = 2 if s > 0 and i == 0 else 1
                mid, cout = inner[s * n + i], stage[s]
                out_hw = b.conv(cin, mid, hw, 3, stride, 1)
                b.same("bn", mid, out_hw)
                b.same("relu", mid, out_hw)
                b.conv(mid, cout, out_hw, 3, 1, 1)
                b.same("bn", cout, out_hw)
                if stride != 1 or cin != cout:
                    b.ops.append(LayerSpec("shortcut", batch, cin, cout, hw, out_hw, 1, stride))
                b.same("add", cout, out_hw)
                b.same("relu", cout, out_hw)
                hw, cin = out_hw, cout
        b.head(cin, hw, space.num_classes)
        return b.ops

    def build_from_arch(self, arch: Mapping[str, Any]) -> nn.Module:
        return CifarResNet(arch["depth"], num_classes=arch["num_classes"],
                           stage_widths=arch["stage_widths"], block_widths=arch["block_widths"],
                           shortcut_indices=arch["shortcut_indices"],
                           in_channels=arch.get("in_channels", 3),
                           input_size=arch.get("input_size", 32))
