"""A small CNN for scikit-learn's 8x8 digits.

Three 3x3 conv + BN + ReLU layers (one 2x2 max-pool after the second), global average pool and a
linear classifier. The default widths (32, 64, 128) make one batch of 256 cost ~0.6 G MACs, so on
a CPU its latency is dominated by compute and follows the conv widths, which is what a pruning
search on it needs to see.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DigitsCNN"]


class DigitsCNN(nn.Module):
    """conv1 -> conv2 -> maxpool -> conv3 -> GAP -> fc.

    Args:
        widths: Output channels of conv1, conv2, conv3.
        num_classes: Outputs of ``fc``.
        in_channels: Image channels.
    """

    def __init__(self, *, widths: Sequence[int] = (32, 64, 128), num_classes: int = 10,
                 in_channels: int = 1) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"widths must be 3 positive ints, got {widths}")
        self.widths, self.num_classes, self.in_channels = widths, num_classes, in_channels
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.conv2 = nn.Conv2d(widths[0], widths[1], 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[1])
        self.conv3 = nn.Conv2d(widths[1], widths[2], 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(widths[2])
        self.fc = nn.Linear(widths[2], num_classes)

    def arch_config(self) -> dict[str, Any]:
        """JSON-able constructor arguments that rebuild this architecture."""
        return {"family": "digits-cnn", "widths": list(self.widths),
                "num_classes": self.num_classes, "in_channels": self.in_channels}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.max_pool2d(x, 2)
        x = F.relu(self.bn3(self.conv3(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
