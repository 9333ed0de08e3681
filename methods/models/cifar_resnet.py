"""CIFAR ResNets (He et al. 2016, section 4.2) with option-A shortcuts, at arbitrary widths.

Parameter names match akamaster/pytorch_resnet_cifar10 (``conv1``, ``bn1``,
``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``, ``linear``), so its pretrained weights load with a
strict ``load_state_dict``. Every width is a constructor argument, so a pruned network is a
genuinely smaller instance of the same class:

* ``stage_widths``: the residual width of each stage (the stem conv writes stage 1's width);
* ``block_widths``: the inner (conv1 output) width of every block, in order;
* ``shortcut_indices``: for the first block of stages 2 and 3, which input channel each output
  channel of the parameter-free shortcut copies (-1: zero). The dense network's default is
  option A: subsample by 2 and zero-pad ``(out - in) // 2`` channels on each side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CIFAR_RESNET_DEPTHS", "BasicBlock", "ChannelGatherShortcut", "CifarResNet"]

CIFAR_RESNET_DEPTHS = (20, 32, 44, 56, 110)


def option_a_index(in_channels: int, out_channels: int) -> list[int]:
    """Option-A zero padding as a gather index: output j copies input ``j - pad`` (or 0)."""
    pad = (out_channels - in_channels) // 2
    return [j - pad if 0 <= j - pad < in_channels else -1 for j in range(out_channels)]


class ChannelGatherShortcut(nn.Module):
    """Parameter-free shortcut: spatial subsampling plus a fixed channel gather.

    ``out[:, j] = x[:, index[j], ::stride, ::stride]`` where ``index[j] >= 0``, else zeros. With
    the default index this is exactly option A (``F.pad`` of ``planes // 4`` channels on both
    sides); after pruning, the index maps the kept channels through that padding.

    Args:
        in_channels: Channels of the input.
        out_channels: Channels of the output.
        stride: Spatial subsampling step.
        index: Input channel per output channel, -1 for a zero channel (default: option A).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 index: Sequence[int] | None = None) -> None:
        super().__init__()
        index = list(option_a_index(in_channels, out_channels) if index is None else index)
        if len(index) != out_channels or any(not -1 <= i < in_channels for i in index):
            raise ValueError(f"index must hold {out_channels} values in [-1, {in_channels}), "
                             f"got {index}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        # -1 points at an all-zero channel appended in forward(). Not persistent: the index is
        # architecture, rebuilt from the constructor, and pretrained state dicts have no such key.
        gather = torch.tensor([i if i >= 0 else in_channels for i in index], dtype=torch.int64)
        self.register_buffer("index", gather, persistent=False)

    def index_list(self) -> list[int]:
        """The gather index with -1 for zero channels (constructor form)."""
        return [int(i) if i < self.in_channels else -1 for i in self.index.tolist()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        x = F.pad(x, (0, 0, 0, 0, 0, 1))
        return x.index_select(1, self.index)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; residual add; ReLU. ``mid_planes`` is the prunable inner width."""

    def __init__(self, in_planes: int, mid_planes: int, planes: int, stride: int = 1,
                 shortcut_index: Sequence[int] | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, mid_planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.conv2 = nn.Conv2d(mid_planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module
        if stride != 1 or in_planes != planes or shortcut_index is not None:
            self.shortcut = ChannelGatherShortcut(in_planes, planes, stride, shortcut_index)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-``depth`` for small square images (32x32 CIFAR, 8x8 digits): stem conv, three
    stages of BasicBlocks, GAP, linear.

    Args:
        depth: 6n + 2 (20, 32, 44, 56, 110, ...).
        num_classes: Outputs of the final linear layer.
        stage_widths: Residual width of stages 1, 2, 3.
        block_widths: Inner width of each of the 3n blocks (default: its stage's width).
        shortcut_indices: Gather index of the stage-2 and stage-3 transition shortcuts
            (default: option A zero padding).
        in_channels: Image channels.
        input_size: Image height and width (the forward pass works for any size; the genome
            space's layer shapes and cost tables are built for this one).
    """

    def __init__(self, depth: int, *, num_classes: int = 10,
                 stage_widths: Sequence[int] = (16, 32, 64),
                 block_widths: Sequence[int] | None = None,
                 shortcut_indices: Sequence[Sequence[int] | None] | None = None,
                 in_channels: int = 3, input_size: int = 32) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        stage_widths = tuple(int(w) for w in stage_widths)
        if len(stage_widths) != 3 or min(stage_widths) < 1:
            raise ValueError(f"stage_widths must be 3 positive ints, got {stage_widths}")
        if block_widths is None:
            block_widths = [w for w in stage_widths for _ in range(n)]
        block_widths = tuple(int(w) for w in block_widths)
        if len(block_widths) != 3 * n or min(block_widths) < 1:
            raise ValueError(f"block_widths must be {3 * n} positive ints, got {block_widths}")
        if shortcut_indices is None:
            shortcut_indices = (None, None)
        if len(shortcut_indices) != 2:
            raise ValueError("shortcut_indices must have 2 entries (stage 2 and 3 transitions)")
        self.depth, self.num_classes, self.in_channels = depth, num_classes, in_channels
        self.input_size = int(input_size)
        self.stage_widths, self.block_widths = stage_widths, block_widths
        self.blocks_per_stage = n

        self.conv1 = nn.Conv2d(in_channels, stage_widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stage_widths[0])
        in_planes = stage_widths[0]
        for s in range(3):
            blocks = []
            for i in range(n):
                stride = 2 if s > 0 and i == 0 else 1
                index = shortcut_indices[s - 1] if s > 0 and i == 0 else None
                blocks.append(BasicBlock(in_planes, block_widths[s * n + i], stage_widths[s],
                                         stride, index))
                in_planes = stage_widths[s]
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(stage_widths[2], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)  # as the pretrained models were initialised

    def stages(self) -> list[nn.Sequential]:
        """``[layer1, layer2, layer3]``."""
        return [self.layer1, self.layer2, self.layer3]

    def arch_config(self) -> dict[str, Any]:
        """JSON-able constructor arguments that rebuild this architecture."""
        indices = [self.stages()[s][0].shortcut for s in (1, 2)]
        return {"family": "cifar-resnet", "depth": self.depth, "num_classes": self.num_classes,
                "in_channels": self.in_channels, "input_size": self.input_size,
                "stage_widths": list(self.stage_widths),
                "block_widths": list(self.block_widths),
                "shortcut_indices": [sc.index_list() for sc in indices]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)
