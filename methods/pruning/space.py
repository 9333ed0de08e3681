"""Genome spaces: which channel groups of a network can be pruned, and how a genome encodes them.

A genome holds one integer per prunable group: the number of channel *granules* kept, from 1 to
``ceil(full_width / granularity)``. The kept width is ``min(granules * granularity,
full_width)``, so the full width is always reachable even when it is not a multiple of the
granularity.

A group that feeds a grouped convolution (ResNeXt, RegNet) must keep a multiple of the conv's
group count (:attr:`Group.multiple`): its granule is ``lcm(granularity, multiple)`` channels
(:meth:`GenomeSpace.step`). Every other group (``multiple`` 1) uses the space's granularity.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from torch import nn

from prunesearch.methods.errors import UsageError

__all__ = ["GROUP_KINDS", "GenomeSpace", "Group", "check_kept", "genome_space"]

#: Group kinds of the built-in families (descriptive: a family's specs and surgery never depend
#: on them; a new family may name its own).
GROUP_KINDS = ("block", "stage", "conv", "tp-group")


@dataclasses.dataclass(frozen=True)
class Group:
    """One set of channels that must be pruned together.

    Attributes:
        name: Stable name (``layer2.3`` for a block's inner width, ``stage2`` for a residual
            width, ``conv2`` for a plain conv, the root module's name for a Torch-Pruning group).
        full_width: Channels of the unpruned network.
        kind: What the group is, e.g. ``block`` (inner width of a residual block), ``stage``
            (residual width shared by a stage), ``conv`` (one plain conv layer) or ``tp-group``
            (a Torch-Pruning group); see :data:`GROUP_KINDS`.
        multiple: Kept widths are multiples of this (the group count of a grouped conv the
            group feeds or is written by; 1 for every other group).
    """

    name: str
    full_width: int
    kind: str
    multiple: int = 1

    def __post_init__(self) -> None:
        if self.multiple < 1 or self.full_width % self.multiple:
            raise ValueError(f"multiple of group '{self.name}' must be >= 1 and divide its "
                             f"full width {self.full_width}, got {self.multiple}")
        if self.full_width < 1:
            raise ValueError(f"full_width of group '{self.name}' must be >= 1, "
                             f"got {self.full_width}")
        if not isinstance(self.kind, str) or not self.kind:
            raise ValueError(f"kind of group '{self.name}' must be a non-empty string, "
                             f"got {self.kind!r}")


@dataclasses.dataclass(frozen=True)
class GenomeSpace:
    """The prunable groups of one model and the granule encoding of their widths.

    Attributes:
        model_name: Registry name of the model.
        groups: Prunable groups in genome order.
        granularity: Channels per granule.
        num_classes: Classifier outputs of the model.
        input_shape: Shape of one input the model is pruned and timed for (the dataset's):
            ``(C, H, W)`` images, or ``(C, L)`` sequences / ``(F,)`` feature vectors for the
            ``custom`` family.
        family: Name of the model family (:mod:`prunesearch.methods.families`) whose surgery and
            layer specs apply; empty: the family that builds ``model_name``.
        base: For families whose layer specs are traced from a pruned copy (dependency-graph
            families): the network traced (its shapes matter, not its weights). Not part of the
            space's identity (equality, hash).
    """

    model_name: str
    groups: tuple[Group, ...]
    granularity: int
    num_classes: int = 10
    input_shape: tuple[int, int, int] = (3, 32, 32)
    family: str = ""
    base: nn.Module | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.family:
            from prunesearch.methods.errors import UnknownNameError
            from prunesearch.methods.families import model_family

            try:
                object.__setattr__(self, "family", model_family(self.model_name).name)
            except UnknownNameError:
                pass  # a hand-made space of an unregistered model: no specs, no surgery
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

    def step(self, group: Group) -> int:
        """Channels per granule of ``group``: the granularity, rounded up to a multiple of the
        group's ``multiple`` (never more than its full width)."""
        if group.multiple == 1:
            return self.granularity
        return min(math.lcm(self.granularity, group.multiple), group.full_width)

    def lower(self) -> tuple[int, ...]:
        """Smallest genome: one granule per group (a group is never pruned away)."""
        return tuple(1 for _ in self.groups)

    def upper(self) -> tuple[int, ...]:
        """Largest genome: ``ceil(full_width / step)`` granules per group."""
        return tuple(math.ceil(g.full_width / self.step(g)) for g in self.groups)

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

    def check_searchable(self, model_name: str) -> None:
        """Refuse a space with nothing to search (every group can only keep its full width).

        Raises:
            UsageError: ``hardware.granularity`` is at least every prunable group's width.
        """
        if all(hi <= lo for lo, hi in zip(self.lower(), self.upper())):
            widest = max(self.full_widths)
            raise UsageError(f"hardware.granularity {self.granularity} leaves nothing to "
                             f"search: no prunable group of {model_name} is wider than {widest} "
                             "channels, so every group keeps its full width; use a granularity "
                             f"below {widest} (e.g. 4, 8 or 16)")

    def channels(self, genome: Sequence[int]) -> list[int]:
        """Kept channels per group: ``min(granules * step, full_width)`` (see :meth:`step`)."""
        genome = self.validate(genome)
        return [self._width(v, g) for v, g in zip(genome, self.groups)]

    def _width(self, granules: int, group: Group) -> int:
        width = min(granules * self.step(group), group.full_width)
        return width - width % group.multiple  # full widths are multiples; steps may overshoot

    def genome_for_channels(self, channels: Sequence[int]) -> tuple[int, ...]:
        """The genome whose kept widths are the smallest ones covering ``channels``."""
        if len(channels) != len(self.groups):
            raise ValueError(f"channels must hold {len(self.groups)} values, got {len(channels)}")
        genome = tuple(max(1, math.ceil(int(c) / self.step(g)))
                       for c, g in zip(channels, self.groups))
        return self.validate(genome)

    def uniform_genome(self, keep_ratio: float) -> tuple[int, ...]:
        """Keep about ``keep_ratio`` of every group (rounded to granules, at least one)."""
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
        return tuple(min(hi, max(1, round(keep_ratio * g.full_width / self.step(g))))
                     for g, hi in zip(self.groups, self.upper()))

    def random_genome(self, rng: np.random.Generator) -> tuple[int, ...]:
        """A genome drawn uniformly from the bounds."""
        return tuple(int(rng.integers(1, hi + 1)) for hi in self.upper())


def genome_space(model: nn.Module, model_name: str | None = None, granularity: int = 4, *,
                 input_shape: Sequence[int] | None = None) -> GenomeSpace:
    """The genome space of a model of a registered family.

    Group order is the family's (:meth:`ModelFamily.groups
    <prunesearch.methods.families.ModelFamily.groups>`): for CIFAR ResNets the inner width of
    every block then the residual width of every stage (30 groups for ResNet-56); for the digits
    CNN one group per conv; for torchvision models every group of Torch-Pruning's dependency
    graph (the classifier's outputs excluded), in network order.

    Args:
        model: The base network.
        model_name: Its registry name (recorded in recipes); default: the family's only model,
            else required.
        granularity: Channels per granule.
        input_shape: ``(C, H, W)`` of the dataset's images (``(C, L)`` or ``(F,)`` for a
            ``custom`` sequence or tabular network). Required for families that take any image
            size (torchvision, custom); the fixed-size families default to their native size.

    Raises:
        TypeError: ``model`` belongs to no registered family.
        ValueError: ``input_shape`` is missing where required, or the model cannot take it.
    """
    from prunesearch.methods.families import family_of

    family = family_of(model)
    if model_name is None:
        model_name = family.model_name_of(model)
    shape = family.input_shape(model, input_shape)
    family.check_input(model_name, shape)
    groups = [Group(*entry) for entry in family.groups(model, shape)]
    return GenomeSpace(model_name=model_name, groups=tuple(groups), granularity=granularity,
                       num_classes=family.num_classes(model, shape), input_shape=shape,
                       family=family.name, base=family.spec_base(model))

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
