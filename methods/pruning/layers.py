"""The layer types channel pruning works on, in one place.

Convolutions over images (``Conv2d``) and over sequences (``Conv1d``, e.g. a keyword-spotting
or time-series network) are pruned alike: a filter is an output channel, its weight one row of
``weight.flatten(1)``; batch norms over either carry a per-channel scale. ``Linear`` layers (an
MLP's hidden widths, a classifier's inputs) are pruned by their output features.
"""

from __future__ import annotations

from torch import nn

__all__ = ["BATCH_NORMS", "CONVS", "PRUNABLE_LAYERS"]

#: Convolutions whose output channels a gene sets.
CONVS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d)
#: Batch norms whose per-channel scale and shift follow a group's channels.
BATCH_NORMS: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d)
#: Every layer whose output width a gene sets.
PRUNABLE_LAYERS: tuple[type[nn.Module], ...] = (*CONVS, nn.Linear)
