"""Genome spaces: which channel groups of a network can be pruned, and how a genome encodes them.

A genome holds one integer per prunable group: the number of channel *granules* kept, from 1 to
``ceil(full_width / granularity)``. The kept width is ``min(granules * granularity,
full_width)``, so the full width is always reachable even when it is not a multiple of the
granularity (the Genome contract in ARCHITECTURE.md).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from torch import nn

__all__ = ["GROUP_KINDS", "GenomeSpace", "Group", "check_kept", "genome_space"]

GROUP_KINDS = ("block", "stage", "conv", "tp-group")


@dataclasses.dataclass(frozen=True)
class Group:
    """One set of channels that must be pruned together.

    Attributes:
        name: Stable name (``layer2.3`` for a block's inner width, ``stage2`` for a residual
            width, ``conv2`` for a plain conv, the root module's name for a Torch-Pruning group).
        full_width: Channels of the unpruned network.
        kind: ``block`` (inner width of a residual block), ``stage`` (residual width shared by a
            stage), ``conv`` (one plain conv layer) or ``tp-group`` (a Torch-Pruning group).
    """

    name: str
    full_width: int
    kind: str

    def __post_init__(self) -> None:
        if self.full_width < 1:
            raise ValueError(f"full_width of group '{self.name}' must be >= 1, "
                             f"got {self.full_width}")
        if self.kind not in GROUP_KINDS:
            raise ValueError(f"kind of group '{self.name}' must be one of {GROUP_KINDS}, "
                             f"got {self.kind!r}")


@dataclasses.dataclass(frozen=True)
class GenomeSpace:
    """The prunable groups of one model and the granule encoding of their widths.

    Attributes:
        model_name: Registry name of the model (decides the group map and the layer specs).
        groups: Prunable groups in genome order.
        granularity: Channels per granule.
        num_classes: Classifier outputs of the model.
        input_shape: ``(C, H, W)`` the model is built for.
    """

    model_name: str
    groups: tuple[Group, ...]
    granularity: int
    num_classes: int = 10
    input_shape: tuple[int, int, int] = (3, 32, 32)

    def __post_init__(self) -> None:
        if self.granularity < 1:
            raise ValueError(f"granularity must be >= 1, got {self.granularity}")
        if not self.groups:
            raise ValueError("a genome space needs at least one group")
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError(f"group names must be unique, got {names}")

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def names(self) -> list[str]:
        """Group names in genome order."""
        return [g.name for g in self.groups]

    @property
    def full_widths(self) -> list[int]:
        """Unpruned width of every group."""
        return [g.full_width for g in self.groups]

    def lower(self) -> tuple[int, ...]:
        """Smallest genome: one granule per group (a group is never pruned away)."""
        return tuple(1 for _ in self.groups)

    def upper(self) -> tuple[int, ...]:
        """Largest genome: ``ceil(full_width / granularity)`` granules per group."""
        return tuple(math.ceil(g.full_width / self.granularity) for g in self.groups)

    def full_genome(self) -> tuple[int, ...]:
        """The genome of the unpruned network (same as :meth:`upper`)."""
        return self.upper()

    def validate(self, genome: Sequence[int]) -> tuple[int, ...]:
        """Return ``genome`` as a tuple of ints, or raise ``ValueError`` saying what is wrong."""
        values = np.asarray(genome)
        if values.ndim != 1 or len(values) != len(self.groups):
            raise ValueError(f"genome must hold {len(self.groups)} integers (one per group of "
                             f"{self.model_name}), got {len(values) if values.ndim == 1 else values.shape}")
        if not np.all(np.equal(np.mod(values, 1), 0)):
            raise ValueError(f"genome must hold integers, got {list(genome)}")
        out = tuple(int(v) for v in values)
        for value, hi, group in zip(out, self.upper(), self.groups):
            if not 1 <= value <= hi:
                raise ValueError(f"genome value {value} for group '{group.name}' is outside "
                                 f"[1, {hi}] (full width {group.full_width}, granularity "
                                 f"{self.granularity})")
        return out

    def channels(self, genome: Sequence[int]) -> list[int]:
        """Kept channels per group: ``min(granules * granularity, full_width)``."""
        genome = self.validate(genome)
        return [min(v * self.granularity, g.full_width) for v, g in zip(genome, self.groups)]

    def genome_for_channels(self, channels: Sequence[int]) -> tuple[int, ...]:
        """The genome whose kept widths are the smallest ones covering ``channels``."""
        if len(channels) != len(self.groups):
            raise ValueError(f"channels must hold {len(self.groups)} values, got {len(channels)}")
        genome = tuple(max(1, math.ceil(int(c) / self.granularity)) for c in channels)
        return self.validate(genome)

    def uniform_genome(self, keep_ratio: float) -> tuple[int, ...]:
        """Keep about ``keep_ratio`` of every group (rounded to granules, at least one)."""
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
        return tuple(min(hi, max(1, round(keep_ratio * g.full_width / self.granularity)))
                     for g, hi in zip(self.groups, self.upper()))

    def random_genome(self, rng: np.random.Generator) -> tuple[int, ...]:
        """A genome drawn uniformly from the bounds."""
        return tuple(int(rng.integers(1, hi + 1)) for hi in self.upper())


def genome_space(model: nn.Module, model_name: str, granularity: int = 4) -> GenomeSpace:
    """The genome space of a registered model.

    Group order: for CIFAR ResNets, the inner width of every block (``layer1.0`` ...
    ``layer3.{n-1}``) then the residual width of every stage (``stage1``..``stage3``; the stem
    conv belongs to stage 1): 30 groups for ResNet-56. For the digits CNN, one group per conv.
    For torchvision models, every group of Torch-Pruning's dependency graph (the classifier's
    outputs excluded), in the graph's order.
    """
    from prunesearch.methods.models import CifarResNet, DigitsCNN

    num_classes, input_shape = _io_shape(model)
    if isinstance(model, CifarResNet):
        n = model.blocks_per_stage
        groups = [Group(f"layer{s + 1}.{i}", model.block_widths[s * n + i], "block")
                  for s in range(3) for i in range(n)]
        groups += [Group(f"stage{s + 1}", model.stage_widths[s], "stage") for s in range(3)]
    elif isinstance(model, DigitsCNN):
        groups = [Group(f"conv{i + 1}", w, "conv") for i, w in enumerate(model.widths)]
    else:
        from prunesearch.methods.pruning.tp_groups import tp_groups

        groups = [Group(name, width, "tp-group")
                  for name, width in tp_groups(model, input_shape=input_shape)]
    return GenomeSpace(model_name=model_name, groups=tuple(groups), granularity=granularity,
                       num_classes=num_classes, input_shape=input_shape)


def _io_shape(model: nn.Module) -> tuple[int, tuple[int, int, int]]:
    from prunesearch.methods.models import CifarResNet, DigitsCNN, _classifier

    num_classes = int(_classifier(model).out_features)
    if isinstance(model, DigitsCNN):
        return num_classes, (model.in_channels, 8, 8)
    if isinstance(model, CifarResNet):
        size = getattr(model, "input_size", 32)
        return num_classes, (model.in_channels, size, size)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return num_classes, (first_conv.in_channels, 32, 32)


def check_kept(kept: Mapping[str, Sequence[int]], widths: Mapping[str, int]) -> None:
    """Check kept channel indices against the groups' full widths (one rule for every surgery).

    Raises:
        ValueError: a group is missing or unknown, keeps zero channels (a broken network,
            VainF/Torch-Pruning#8), or its indices are not sorted, unique and in range.
    """
    missing = sorted(set(widths) - set(kept))
    extra = sorted(set(kept) - set(widths))
    if missing or extra:
        raise ValueError(f"kept indices must name exactly the groups {list(widths)}; "
                         f"missing {missing}, unknown {extra}")
    for name, width in widths.items():
        idx = list(kept[name])
        if not idx:
            raise ValueError(f"group '{name}' would keep zero channels")
        if idx != sorted(set(idx)) or idx[0] < 0 or idx[-1] >= width:
            raise ValueError(f"kept indices of group '{name}' must be sorted, unique and in "
                             f"[0, {width}), got {idx}")
